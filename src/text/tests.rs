use super::*;

#[test]
fn bounded_display_cuts_on_characters() {
    assert_eq!(bounded_display(&"héllo", 3), "hél…");
    assert_eq!(bounded_display(&"abc", 3), "abc");
    assert_eq!(truncate_chars("héllo", 2), "hé…");
    assert_eq!(truncate_chars("hé", 2), "hé");
}
