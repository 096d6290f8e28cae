//! The harness runs the operator as its ServiceAccount, not as `system:masters`: the
//! operator kubeconfig authenticates as that user, and the shipped RBAC — nothing more —
//! decides what it may do. If this breaks, every other e2e test silently stops checking
//! the manifests' permissions.

use cyberdesk_integration::cluster::{cluster, install_operator_rbac};
use cyberdesk_integration::controlplane::{OPERATOR_GROUPS, OPERATOR_USER};
use cyberdesk_integration::kubectl::Kubectl;
use cyberdesk_integration::overlay::render;

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

/// One right as `kubectl auth can-i --list` prints it: resource, resource names, verbs
/// (names and verbs sorted, so the order RBAC lists them in does not matter).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Right {
    resource: String,
    names: Vec<String>,
    verbs: Vec<String>,
}

fn sorted_words(s: &str) -> Vec<String> {
    let mut words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    words.sort();
    words
}

/// The resource rows of `kubectl auth can-i --list`, without non-resource URLs and the
/// self-review APIs every authenticated user has.
fn listed_rights(k: &Kubectl, namespace: &str) -> std::collections::BTreeSet<Right> {
    let out = k
        .run(&["auth", "can-i", "--list", "-n", namespace], None)
        .expect("kubectl")
        .ok()
        .expect("kubectl auth can-i --list");
    out.lines()
        .skip(1)
        .filter(|line| !line.starts_with(char::is_whitespace))
        .filter_map(|line| {
            let (resource, rest) = line.split_once(char::is_whitespace)?;
            // `[non-resource URLs] [resource names] [verbs]`
            let groups: Vec<&str> = rest
                .split('[')
                .skip(1)
                .map(|g| g.split(']').next().unwrap_or_default())
                .collect();
            let [urls, names, verbs] = groups.as_slice() else {
                panic!("unexpected can-i row: {line}");
            };
            assert!(
                urls.is_empty(),
                "non-resource URL on a resource row: {line}"
            );
            Some(Right {
                resource: resource.to_string(),
                names: sorted_words(names),
                verbs: sorted_words(verbs),
            })
        })
        .filter(|r| !r.resource.starts_with("selfsubject"))
        .collect()
}

/// README's table between the `operator-rights` markers: (where, right, why).
fn documented_rights() -> Vec<(String, Right, String)> {
    let readme = std::fs::read_to_string(cyberdesk_integration::workspace::repo_path("README.md"))
        .expect("README.md");
    let (_, rest) = readme
        .split_once("<!-- operator-rights -->")
        .expect("README has the operator-rights table");
    let (table, _) = rest
        .split_once("<!-- /operator-rights -->")
        .expect("the table ends");
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let [place, resource, names, verbs, why] = cells.as_slice() else {
                panic!("README rights row with {} cells: {line}", cells.len());
            };
            (
                place.to_string(),
                Right {
                    resource: resource.trim_matches('`').to_string(),
                    names: sorted_words(names),
                    verbs: sorted_words(verbs),
                },
                why.to_string(),
            )
        })
        .collect()
}

#[test]
fn every_right_the_apiserver_grants_is_in_the_readme_with_why() {
    let c = cluster();
    install_operator_rbac(&c);
    let _ = c
        .kubectl()
        .run(&["create", "namespace", "rights-tenant"], None);
    let operator = c.kubectl().as_user(OPERATOR_USER, &OPERATOR_GROUPS);
    let everywhere = listed_rights(&operator, "rights-tenant");
    let home: std::collections::BTreeSet<Right> = listed_rights(&operator, "cyberdesk-system")
        .difference(&everywhere)
        .cloned()
        .collect();
    let documented = documented_rights();
    for (place, right, why) in &documented {
        assert!(!why.is_empty(), "README gives no reason for {right:?}");
        assert!(
            matches!(place.as_str(), "every namespace" | "cyberdesk-system"),
            "unknown place {place:?}"
        );
    }
    let in_readme = |place: &str| -> std::collections::BTreeSet<Right> {
        documented
            .iter()
            .filter(|(p, _, _)| p == place)
            .map(|(_, r, _)| r.clone())
            .collect()
    };
    for (place, granted) in [
        ("every namespace", &everywhere),
        ("cyberdesk-system", &home),
    ] {
        let readme = in_readme(place);
        let missing: Vec<_> = granted.difference(&readme).collect();
        let extra: Vec<_> = readme.difference(granted).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README's rights ({place}) differ from what the apiserver grants:\n granted but not in README: {missing:#?}\n in README but not granted: {extra:#?}"
        );
    }
    // The pools' rights are among them.
    assert!(
        everywhere
            .iter()
            .any(|r| r.resource == "cyberdeskpools.cyberdesk.io"),
        "{everywhere:#?}"
    );
}

#[test]
fn the_cert_manager_overlay_grants_no_right_on_webhook_configurations() {
    let c = cluster();
    let touches_webhooks = |objects: &[serde_yaml::Value]| {
        objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("ClusterRole" | "Role")))
            .flat_map(|o| o["rules"].as_sequence().cloned().unwrap_or_default())
            .flat_map(|rule| rule["resources"].as_sequence().cloned().unwrap_or_default())
            .any(|r| {
                r.as_str()
                    .is_some_and(|r| r.ends_with("webhookconfigurations"))
            })
    };
    assert!(
        touches_webhooks(&render(&c, "manifests/base")),
        "the base must keep the caBundle rights (self-managed certificates)"
    );
    let cert_manager = render(&c, "manifests/overlays/cert-manager");
    assert!(
        !touches_webhooks(&cert_manager),
        "cert-manager's cainjector owns caBundle; the overlay must drop the operator's rights on the webhook configurations"
    );
    assert!(
        !cert_manager
            .iter()
            .any(|o| o["metadata"]["name"] == "cyberdesk-operator-webhook-ca"),
        "the binding of the dropped role is left behind"
    );
}
