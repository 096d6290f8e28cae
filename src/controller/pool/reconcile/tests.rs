use super::*;

#[test]
fn a_pool_member_carries_no_desk_labels_and_has_annotations() {
    let mut vm = json!({
        "metadata": {"name": "v", "labels": {"cyberdesk-instance": "v", "app": "cyberdesk", "cyberdesk.io/pool": "warm"}},
        "spec": {"template": {"metadata": {"labels": {"cyberdesk-instance": "v", "cyberdesk.io/desk-uid": "x"}}}}
    });
    as_pool_member(&mut vm, "warm");
    assert!(vm.pointer("/metadata/labels/cyberdesk-instance").is_none());
    assert!(
        vm.pointer("/spec/template/metadata/labels/cyberdesk-instance")
            .is_none()
    );
    assert!(
        vm.pointer("/spec/template/metadata/labels/cyberdesk.io~1desk-uid")
            .is_none()
    );
    assert_eq!(vm["metadata"]["labels"]["app"], "cyberdesk");
    assert_eq!(vm["metadata"]["annotations"]["cyberdesk.io/pool"], "warm");
}

#[test]
fn member_names_are_distinct_and_valid() {
    let a = suffix();
    let b = suffix();
    assert_eq!(a.len(), 5);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert_ne!(a, b, "two random suffixes collided (1 in 60 million)");
}

mod passes {
    use std::sync::Arc;

    use super::*;
    use crate::controller::test_support::{client, refusal, world};

    const VMS: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines";
    const STATUS: &str = "/apis/cyberdesk.io/v1alpha1/namespaces/ns/cyberdeskpools/warm/status";

    fn pool() -> CyberdeskPool {
        serde_json::from_value(json!({
            "apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool",
            "metadata": {"name": "warm", "namespace": "ns", "uid": "pool-uid", "generation": 1,
                         "finalizers": [names::POOL_FINALIZER]},
            "spec": {"size": 1},
        }))
        .expect("pool")
    }

    #[tokio::test]
    async fn an_empty_pool_boots_a_member_and_writes_its_status() {
        let stored = pool();
        let answer_pool = stored.clone();
        let (client, log) =
            client(
                move |asked| match (asked.method.as_str(), asked.path.as_str()) {
                    ("POST", p) if p.starts_with(VMS) => (201, asked.body.clone()),
                    ("PATCH", p) if p.starts_with(STATUS) => {
                        (200, serde_json::to_value(&answer_pool).expect("pool"))
                    }
                    _ => refusal(404, "NotFound"),
                },
            );
        let w = world(client);
        let ctx = Arc::new(PoolContext::new(w.shared.clone()));
        let (action, outcome) = ctx.pass(&stored, "ns").await.expect("pass");
        assert_eq!(outcome, Outcome::Success);
        // Back while the VM boots, without waiting for a watch event.
        assert_eq!(action, Action::requeue(BOOTING_RECHECK));
        let creates = log.to(VMS);
        assert_eq!(creates.len(), 1, "{creates:?}");
        let vm = &creates[0].body;
        let name = vm["metadata"]["name"].as_str().unwrap_or_default();
        assert!(name.starts_with("cyberdesk-pool-warm-"), "{name}");
        assert_eq!(vm["metadata"]["labels"][names::LABEL_POOL], "warm");
        assert_eq!(
            vm["metadata"]["labels"][names::LABEL_POOL_STATE],
            names::POOL_STATE_AVAILABLE
        );
        assert_eq!(vm["metadata"]["ownerReferences"][0]["uid"], "pool-uid");
        assert_eq!(log.to(STATUS).len(), 1);
        assert_eq!(w.metrics.vm_created.get(), 1);
        // Until the cache shows it, the pool counts the VM it just created.
        let mut members = Vec::new();
        ctx.writes.correct("pool-uid", &mut members);
        assert_eq!(members.len(), 1, "{members:?}");
    }
}
