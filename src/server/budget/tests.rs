use super::*;

const MIB: usize = 1024 * 1024;

#[test]
fn shares_are_refused_past_the_budget_and_given_back_when_dropped() {
    let budget = MemoryBudget::new(32 * MIB);
    let mut first = budget.share();
    assert!(first.try_grow(20 * MIB));
    let mut second = budget.share();
    // Large requests together stop at three quarters of the budget.
    assert!(!second.try_grow(5 * MIB));
    assert_eq!(second.held(), 0);
    assert!(second.try_grow(4 * MIB));
    assert_eq!(budget.used(), 24 * MIB);
    drop(first);
    assert_eq!(budget.used(), 4 * MIB);
    drop(second);
    assert_eq!(budget.used(), 0);
}

#[test]
fn small_requests_still_fit_when_large_ones_took_their_part() {
    let budget = MemoryBudget::new(32 * MIB);
    let mut large = budget.share();
    assert!(large.try_grow(24 * MIB));
    let mut small = Vec::new();
    for _ in 0..32 {
        let mut s = budget.share();
        assert!(s.try_grow(100 * 1024));
        assert!(s.try_grow(100 * 1024));
        small.push(s);
    }
    // A small request that grows past the small size counts as large from then on.
    let mut growing = budget.share();
    assert!(growing.try_grow(SMALL_REQUEST));
    assert!(!growing.try_grow(1));
}

#[test]
fn the_largest_request_is_three_quarters_of_the_budget() {
    assert_eq!(MemoryBudget::new(32 * MIB).largest_request(), 24 * MIB);
    assert!(fits(32 * MIB, 0, 0, 24 * MIB));
    assert!(!fits(32 * MIB, 0, 0, 24 * MIB + 1));
    assert!(fits(32 * MIB, 31 * MIB, 0, 1024));
    assert!(!fits(32 * MIB, usize::MAX, 0, 1));
}
