use super::*;

#[test]
fn delays_double_up_to_the_cap_and_stop_after_the_last_attempt() {
    let p = RetryPolicy {
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(5),
        max_attempts: 5,
    };
    let delays: Vec<_> = (1..=5).map(|n| p.delay_after(n)).collect();
    assert_eq!(
        delays,
        [
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(4)),
            Some(Duration::from_secs(5)),
            None
        ]
    );
}

#[test]
fn only_2xx_is_delivered() {
    assert!(delivered(200) && delivered(204));
    assert!(!delivered(500) && !delivered(404) && !delivered(301));
}
