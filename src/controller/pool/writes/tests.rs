use super::*;

#[test]
fn own_writes_count_until_the_cache_shows_them() {
    let writes = PoolWrites::default();
    writes.created("p", "vm-new");
    writes.deleted("p", "vm-old");
    let mut members = vec![Member {
        name: "vm-old".into(),
        state: MemberState::Ready,
        created: None,
    }];
    writes.correct("p", &mut members);
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].state, MemberState::Deleting);
    assert_eq!(members[1].name, "vm-new");
    assert_eq!(members[1].state, MemberState::Booting);
    // The cache caught up: the new VM is there, the old one gone.
    let mut caught_up = vec![Member {
        name: "vm-new".into(),
        state: MemberState::Booting,
        created: None,
    }];
    writes.correct("p", &mut caught_up);
    assert_eq!(caught_up.len(), 1);
}
