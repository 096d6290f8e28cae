use super::*;
use crate::model::{Cyberdesk, names};

#[test]
fn ops_test_the_version_read_and_keep_other_finalizers() {
    let mut desk = Cyberdesk::new("a", Default::default());
    desk.metadata.resource_version = Some("7".into());
    let ops = adding(&desk, names::FINALIZER);
    assert_eq!(ops[0]["value"], "7");
    assert_eq!(ops[1]["path"], "/metadata/finalizers");
    desk.metadata.finalizers = Some(vec!["other".into(), names::FINALIZER.into()]);
    assert_eq!(adding(&desk, "x")[1]["path"], "/metadata/finalizers/-");
    assert_eq!(
        releasing(&desk, names::FINALIZER)[1]["value"],
        json!(["other"])
    );
}
