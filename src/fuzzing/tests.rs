use std::path::Path;

use super::*;

/// Every file of the committed corpus of `target` through `check`.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries.flatten() {
        let data = std::fs::read(entry.path()).unwrap_or_default();
        check(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}

#[test]
fn admission_corpus_keeps_its_invariants() {
    replay("admission", admission_body);
}

#[test]
fn template_corpus_keeps_its_invariants() {
    replay("template", template_render);
}

#[test]
fn policy_corpus_keeps_its_invariants() {
    replay("policy", policy_compile);
}
