//! Giving freed heap memory back to the system. glibc's allocator keeps what a burst freed
//! (a thousand desks converging, a relist's decoded pages) inside its arenas, where it
//! counts in the RSS a memory limit judges; only the arena's top is returned on its own.
//! A trim every [`TRIM_PERIOD`] returns the free pages in the middle of the arenas too.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the heap is trimmed; a trim of a few tens of MiB of heap takes well under a
/// millisecond.
pub const TRIM_PERIOD: Duration = Duration::from_secs(15);

/// Returns free heap pages to the system; true when some were returned. A no-op (false)
/// where the allocator is not glibc's.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every [`TRIM_PERIOD`] until `stop`.
pub async fn trim_periodically(stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TRIM_PERIOD) => {}
        }
        trim();
    }
}

#[cfg(test)]
mod tests;
