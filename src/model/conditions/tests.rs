use super::*;

fn cond(status: ConditionStatus, time: &str, reason: &str) -> Condition {
    Condition {
        type_: READY.into(),
        status,
        reason: reason.into(),
        message: CompactString::default(),
        last_transition_time: time.into(),
        observed_generation: Some(1),
    }
}

#[test]
fn same_status_keeps_transition_time() {
    let mut all = vec![cond(ConditionStatus::True, "t1", "A")];
    set_condition(&mut all, cond(ConditionStatus::True, "t2", "B"));
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].last_transition_time, "t1");
    assert_eq!(all[0].reason, "B");
}

#[test]
fn flipped_status_moves_transition_time() {
    let mut all = vec![cond(ConditionStatus::True, "t1", "A")];
    set_condition(&mut all, cond(ConditionStatus::False, "t2", "B"));
    assert_eq!(all[0].last_transition_time, "t2");
}

#[test]
fn new_type_is_appended() {
    let mut all = vec![cond(ConditionStatus::True, "t1", "A")];
    let mut other = cond(ConditionStatus::False, "t2", "B");
    other.type_ = TIMED_OUT.into();
    set_condition(&mut all, other);
    assert_eq!(all.len(), 2);
    assert!(find(&all, TIMED_OUT).is_some());
}
