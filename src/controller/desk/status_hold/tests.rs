use super::*;

fn status(phase: CyberdeskPhase, vmi: &str) -> CyberdeskStatus {
    CyberdeskStatus {
        phase: Some(phase),
        vmi_phase: Some(vmi.into()),
        ..CyberdeskStatus::default()
    }
}

#[test]
fn a_starting_detail_written_just_now_waits_out_the_hold() {
    let before = status(CyberdeskPhase::Starting, "Pending");
    let desired = status(CyberdeskPhase::Starting, "Scheduling");
    let wait = wait_for(Some(&before), &desired, Some(Duration::from_millis(300)));
    assert_eq!(wait, Some(Duration::from_millis(700)));
}

#[test]
fn nothing_waits_past_the_hold_or_without_a_recent_write() {
    let before = status(CyberdeskPhase::Starting, "Pending");
    let desired = status(CyberdeskPhase::Starting, "Scheduling");
    assert_eq!(wait_for(Some(&before), &desired, Some(HOLD)), None);
    assert_eq!(wait_for(Some(&before), &desired, None), None);
    let recent = Some(Duration::from_millis(10));
    assert_eq!(
        wait_for(Some(&desired), &desired, recent),
        None,
        "no change"
    );
}

#[test]
fn a_change_of_phase_is_never_held() {
    let recent = Some(Duration::from_millis(10));
    let starting = status(CyberdeskPhase::Starting, "Scheduled");
    let running = status(CyberdeskPhase::Running, "Running");
    let provisioning = status(CyberdeskPhase::Provisioning, "");
    assert_eq!(wait_for(Some(&starting), &running, recent), None);
    assert_eq!(wait_for(Some(&provisioning), &starting, recent), None);
    assert_eq!(wait_for(None, &starting, recent), None);
    let failed = status(CyberdeskPhase::Failed, "Failed");
    assert_eq!(wait_for(Some(&starting), &failed, recent), None);
}

#[test]
fn the_clock_keeps_only_desks_written_while_starting() {
    let clock = StatusClock::default();
    clock.wrote("a", Some(CyberdeskPhase::Starting));
    assert!(clock.since("a").is_some());
    clock.wrote("a", Some(CyberdeskPhase::Running));
    assert_eq!(clock.since("a"), None);
    assert_eq!(clock.len(), 0);
    clock.wrote("b", Some(CyberdeskPhase::Provisioning));
    assert_eq!(clock.since("b"), None);
}
