//! The harness runs the operator as its ServiceAccount, not as `system:masters`: the
//! operator kubeconfig authenticates as that user, and the shipped RBAC — nothing more —
//! decides what it may do. If this breaks, every other e2e test silently stops checking
//! the manifests' permissions.

use cyberdesk_integration::cluster::{cluster, install_operator_rbac};
use cyberdesk_integration::controlplane::{OPERATOR_GROUPS, OPERATOR_USER};
use cyberdesk_integration::kubectl::Kubectl;

/// `kubectl auth can-i ARGS`: "yes" or "no" (can-i exits 1 on "no", so no success check).
fn can_i(k: &Kubectl, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = k.run(&all, None).expect("kubectl");
    let answer = out.stdout.trim().to_string();
    assert!(
        matches!(answer.as_str(), "yes" | "no"),
        "kubectl auth can-i {args:?} gave no answer: {}{}",
        out.stdout,
        out.stderr
    );
    answer
}

#[test]
fn the_operator_kubeconfig_authenticates_as_the_service_account() {
    let c = cluster();
    let out = c
        .operator_kubectl()
        .run(&["auth", "whoami", "-o", "json"], None)
        .expect("kubectl")
        .ok()
        .expect("kubectl auth whoami");
    let review: serde_json::Value = serde_json::from_str(&out).expect("SelfSubjectReview JSON");
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], OPERATOR_USER, "{out}");
    let groups = user["groups"].as_array().cloned().unwrap_or_default();
    for group in OPERATOR_GROUPS {
        assert!(groups.iter().any(|g| g == group), "no group {group}: {out}");
    }
    assert!(
        !groups.iter().any(|g| g == "system:masters"),
        "the operator would bypass RBAC: {out}"
    );
}

#[test]
fn only_the_shipped_rbac_decides_what_the_operator_may_do() {
    let c = cluster();
    install_operator_rbac(&c);
    let operator = c.operator_kubectl();
    // Granted by the shipped ClusterRole and Role (built-in kinds: kubectl resolves them
    // without the CRDs installed).
    assert_eq!(
        can_i(
            &operator,
            &["create", "events.events.k8s.io", "-n", "default"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &operator,
            &[
                "update",
                "leases.coordination.k8s.io/cyberdesk-operator",
                "-n",
                "cyberdesk-system"
            ]
        ),
        "yes"
    );
    // Not granted: Secrets outside its own namespace, listing any.
    assert_eq!(
        can_i(&operator, &["list", "secrets", "--all-namespaces"]),
        "no"
    );
    assert_eq!(
        can_i(&operator, &["get", "secrets", "-n", "kube-system"]),
        "no"
    );
    // Asked by the admin on the operator's behalf, through impersonation.
    let impersonated = c.kubectl().as_user(OPERATOR_USER, &OPERATOR_GROUPS);
    let create_webhooks = can_i(&impersonated, &["create", "mutatingwebhookconfigurations"]);
    assert_eq!(
        create_webhooks, "no",
        "the operator may create webhook configurations"
    );
}
