use super::*;

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn freed_memory_is_returned() {
    // Many small blocks (below the mmap threshold, so they live in the heap), all
    // freed: glibc keeps them until a trim.
    let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1_000]).collect();
    drop(blocks);
    assert!(trim(), "nothing returned after 20 MB were freed");
}
