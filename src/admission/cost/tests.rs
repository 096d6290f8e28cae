use super::*;

#[test]
fn a_small_review_costs_a_few_times_its_bytes() {
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"metadata":{"name":"d"},"spec":{"timeoutMs":60000}}}}"#;
    let cost = parse_cost(body, usize::MAX).expect("counts");
    // 10 values (4 of them strings) and 9 keys, 91 bytes of text in all.
    assert_eq!(
        cost,
        10 * PER_VALUE + 9 * (PER_VALUE + PER_STRING) + 4 * PER_STRING + 91
    );
    assert!(cost < 20 * body.len());
}

#[test]
fn an_array_of_zeros_costs_far_more_than_its_bytes_and_counting_stops_at_the_limit() {
    let mut body = b"[".to_vec();
    body.extend(std::iter::repeat_n(b"0,".as_slice(), 100_000).flatten());
    body.extend(b"0]");
    let cost = parse_cost(&body, usize::MAX).expect("counts");
    assert_eq!(cost, (100_001 + 1) * PER_VALUE);
    assert!(cost > 30 * body.len());
    assert!(matches!(
        parse_cost(&body, 1 << 20),
        Err(CostError::OverLimit { limit }) if limit == 1 << 20
    ));
}

#[test]
fn long_strings_cost_about_their_bytes() {
    let body = format!("{{\"a\":\"{}\"}}", "x".repeat(1 << 20));
    let cost = parse_cost(body.as_bytes(), usize::MAX).expect("counts");
    assert!(cost < body.len() + 1024, "{cost}");
}

#[test]
fn bad_json_is_left_to_the_parse() {
    for body in [&b"{"[..], b"[1,2", b"{} trailing", b"", b"nul"] {
        assert!(
            matches!(parse_cost(body, usize::MAX), Err(CostError::Json { .. })),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        parse_cost(deep.as_bytes(), usize::MAX),
        Err(CostError::Json { .. })
    ));
    // What was counted before the error is what the parse may take before it fails.
    let truncated = format!("[{}", "0,".repeat(1000));
    assert!(matches!(
        parse_cost(truncated.as_bytes(), usize::MAX),
        Err(CostError::Json { counted, .. }) if counted == 1001 * PER_VALUE
    ));
}
