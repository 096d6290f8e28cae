use super::*;

#[test]
fn doubles_and_caps() {
    let mut b = ExponentialBackoff::new(
        Duration::from_millis(200),
        Duration::from_secs(1),
        Duration::ZERO,
    );
    let seen: Vec<u128> = (0..5)
        .filter_map(|_| b.next())
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(seen, [200, 400, 800, 1000, 1000]);
    b.reset();
    assert_eq!(b.next(), Some(Duration::from_millis(200)));
}

#[test]
fn nth_delay_matches_the_iterator() {
    let (min, max) = (Duration::from_millis(500), Duration::from_secs(300));
    let mut b = ExponentialBackoff::new(min, max, Duration::ZERO);
    for attempt in 1..=20 {
        assert_eq!(
            Some(nth_delay(min, max, attempt)),
            b.next(),
            "attempt {attempt}"
        );
    }
    assert_eq!(nth_delay(min, max, 0), min);
    assert_eq!(nth_delay(min, max, u32::MAX), max);
}

#[test]
fn a_reset_right_after_a_failure_is_ignored() {
    let mut b = ExponentialBackoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        Duration::from_secs(30),
    );
    b.next();
    b.reset();
    assert_eq!(b.next(), Some(Duration::from_millis(400)));
}
