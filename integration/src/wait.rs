//! The one poller every wait in the tests, the demo and the benchmarks is built on.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is looked at again.
pub const EVERY: Duration = Duration::from_millis(50);

/// Looks at `f` every [`EVERY`] until it yields `Some`, for at most `within`; `None` when
/// time ran out. `f` is always looked at once more after the deadline, so a slow look does
/// not cost the last chance.
pub async fn until<T, F, Fut>(within: Duration, f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until_every(within, EVERY, f).await
}

/// [`until`] looking every `every`: benchmarks timing a transition and tests catching a
/// moment need a finer grain than the default.
pub async fn until_every<T, F, Fut>(within: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let expired = start.elapsed() >= within;
        if let Some(v) = f().await {
            return Some(v);
        }
        if expired {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// [`until`], panicking with `what` when time runs out: the form tests use.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match until(within, f).await {
        Some(v) => v,
        None => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Whether `f` comes to hold within `within`, looked at as [`until`] does: for plain checks
/// that need no I/O of their own await (a metric, a kubectl run).
pub async fn holds(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    until(within, || std::future::ready(f().then_some(())))
        .await
        .is_some()
}

/// Looks at `f` every [`EVERY`] for the whole of `within`: for invariants that must hold
/// throughout a window (`f` asserts them).
pub async fn throughout<F, Fut>(within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    until(within, || {
        let look = f();
        async move {
            look.await;
            None::<()>
        }
    })
    .await;
}

/// Runs `fut` to completion on a private single-threaded runtime, for the few places with
/// no runtime of their own (plain `#[test]` functions, keeper threads). Called inside a
/// runtime it panics, which keeps blocking waits out of async tests.
pub fn blocking<T>(fut: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime for a blocking wait: {e}"))
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_up_only_after_a_look_past_the_deadline() {
        let start = Instant::now();
        let mut last_look = Duration::ZERO;
        let seen = until(Duration::from_millis(120), || {
            last_look = start.elapsed();
            std::future::ready(None::<()>)
        })
        .await;
        assert_eq!(seen, None);
        assert!(last_look >= Duration::from_millis(120), "{last_look:?}");
    }

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut n = 0;
        let seen = until(Duration::from_secs(5), || {
            n += 1;
            std::future::ready((n == 3).then_some(n))
        })
        .await;
        assert_eq!(seen, Some(3));
    }

    #[test]
    fn blocking_runs_outside_a_runtime() {
        assert_eq!(blocking(async { 7 }), 7);
    }
}
