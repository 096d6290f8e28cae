use super::*;
use crate::model::{CyberdeskPhase, CyberdeskStatus};

fn desk(rv: &str, phase: CyberdeskPhase) -> Cyberdesk {
    let mut d: Cyberdesk = serde_json::from_value(serde_json::json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "a", "namespace": "n", "resourceVersion": rv}, "spec": {},
    }))
    .expect("desk");
    d.status = Some(CyberdeskStatus {
        phase: Some(phase),
        ..Default::default()
    });
    d
}

fn phase(d: &Cyberdesk) -> Option<CyberdeskPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

#[test]
fn a_cache_behind_the_write_sees_the_written_desk() {
    let own = OwnWrites::default();
    let before = desk("5", CyberdeskPhase::Starting);
    own.record(&before, desk("6", CyberdeskPhase::Running));
    let seen = own.view(&before).expect("own write");
    assert_eq!(phase(&seen), Some(CyberdeskPhase::Running));
    assert_eq!(seen.metadata.resource_version.as_deref(), Some("6"));
}

#[test]
fn a_newer_resource_version_drops_the_memory() {
    let own = OwnWrites::default();
    own.record(
        &desk("5", CyberdeskPhase::Starting),
        desk("6", CyberdeskPhase::Running),
    );
    // Caught up, or changed by someone else: the cache is the truth again.
    assert!(own.view(&desk("7", CyberdeskPhase::Failed)).is_none());
    assert!(own.view(&desk("5", CyberdeskPhase::Starting)).is_none());
}

#[test]
fn writes_planned_from_earlier_own_writes_keep_every_older_version() {
    let own = OwnWrites::default();
    // The finalizer over 5 (giving 6), then a status planned from what that write
    // returned (giving 7), then another planned from a view of 7 (giving 8).
    own.record(
        &desk("5", CyberdeskPhase::Pending),
        desk("6", CyberdeskPhase::Pending),
    );
    own.record(
        &desk("6", CyberdeskPhase::Pending),
        desk("7", CyberdeskPhase::Starting),
    );
    let view = own.view(&desk("5", CyberdeskPhase::Pending)).expect("view");
    own.record(&view, desk("8", CyberdeskPhase::Running));
    for behind in ["5", "6", "7"] {
        let seen = own
            .view(&desk(behind, CyberdeskPhase::Pending))
            .expect("own write");
        assert_eq!(
            phase(&seen),
            Some(CyberdeskPhase::Running),
            "cache at {behind}"
        );
    }
    // Caught up with the last.
    assert!(own.view(&desk("8", CyberdeskPhase::Running)).is_none());
}

#[test]
fn forgetting_a_desk() {
    let own = OwnWrites::default();
    let d = desk("5", CyberdeskPhase::Starting);
    own.record(&d, desk("6", CyberdeskPhase::Running));
    own.forget(&d);
    assert!(own.view(&d).is_none());
}
