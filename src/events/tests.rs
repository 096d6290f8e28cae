use super::*;

fn desk(name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        name: Some(name.into()),
        namespace: Some("ns".into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

#[test]
fn a_full_lane_drops_and_counts_instead_of_waiting() {
    let (tx, _unread) = mpsc::channel(1);
    let dropped = IntCounter::new("dropped", "dropped").expect("counter");
    let announcer = Announcer {
        lanes: vec![tx],
        dropped: dropped.clone(),
    };
    let event = || Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Ready".into(),
        note: None,
        action: "Run".into(),
        secondary: None,
    };
    announcer.announce(desk("a", "uid-a"), event());
    assert_eq!(dropped.get(), 0);
    announcer.announce(desk("a", "uid-a"), event());
    assert_eq!(dropped.get(), 1);
}

fn key(name: &str) -> SeriesKey {
    let event = Event {
        type_: EventType::Warning,
        reason: "VirtualMachineConflict".into(),
        note: Some("exists".into()),
        action: "Create".into(),
        secondary: None,
    };
    SeriesKey::of(&desk(name, &format!("uid-{name}")), &event)
}

fn published(last: Timestamp) -> Published {
    Published {
        name: "e".into(),
        count: 1,
        last,
    }
}

#[test]
fn a_repeat_within_the_ttl_extends_the_series_and_a_later_one_starts_anew() {
    let t0 = Timestamp::now();
    let mut seen = Seen::default();
    seen.insert(key("a"), published(t0), t0);
    assert!(
        seen.get_mut(&key("a"), t0 + SignedDuration::from_mins(5))
            .is_some()
    );
    assert!(seen.get_mut(&key("b"), t0).is_none());
    assert!(seen.get_mut(&key("a"), t0 + SERIES_TTL).is_none());
}

#[test]
fn a_lane_remembers_a_bounded_number_of_events_and_forgets_the_oldest() {
    let t0 = Timestamp::now();
    let mut seen = Seen::default();
    for i in 0..SERIES_MEMORY + 10 {
        let at = t0 + SignedDuration::from_millis(i as i64);
        seen.insert(key(&format!("d{i}")), published(at), at);
    }
    assert_eq!(seen.0.len(), SERIES_MEMORY);
    let now = t0 + SignedDuration::from_secs(1);
    assert!(seen.get_mut(&key("d0"), now).is_none());
    assert!(
        seen.get_mut(&key(&format!("d{}", SERIES_MEMORY + 9)), now)
            .is_some()
    );
}

#[test]
fn a_desk_keeps_its_lane_and_desks_spread_over_lanes() {
    let a = desk("a", "uid-a");
    assert_eq!(lane_of(&a, LANES), lane_of(&a.clone(), LANES));
    let used: std::collections::HashSet<usize> = (0..200)
        .map(|i| lane_of(&desk(&format!("d{i}"), &format!("uid-{i}")), LANES))
        .collect();
    assert_eq!(used.len(), LANES);
}
