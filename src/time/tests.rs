use super::*;

#[test]
fn format_parse_roundtrip() {
    let t = parse("2026-11-22T10:00:00.123Z").expect("valid timestamp");
    assert_eq!(parse(&format(t)), Some(t));
    assert_eq!(parse("not a time"), None);
}
