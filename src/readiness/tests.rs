use super::*;

#[test]
fn ready_only_when_all_gates_open_and_not_stopping() {
    let r = Readiness::default();
    assert!(r.check().is_err());
    r.register("webhook");
    r.register("caches");
    r.open("webhook");
    assert_eq!(r.check(), Err("caches: not ready".into()));
    r.open("caches");
    assert_eq!(r.check(), Ok(()));
    r.begin_shutdown();
    assert_eq!(r.check(), Err("shutting down".into()));
}
