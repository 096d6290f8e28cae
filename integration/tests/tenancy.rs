//! Tenant isolation end to end, with the webhooks registered and the operator running as its
//! ServiceAccount under the shipped RBAC: users are impersonated (`kubectl --as`), the
//! apiserver authorizes them with RBAC, and the operator asks it about them
//! (SubjectAccessReview).

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml, wait_webhooks_active};
use cyberdesk_integration::kubectl::Kubectl;
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{SharedOperator, webhook_operator};
use cyberdesk_integration::wait::eventually;

const OPERATOR_SA: &str = "system:serviceaccount:cyberdesk-system:cyberdesk-operator";

async fn setup() -> (Cluster, SharedOperator) {
    webhook_operator(&[]).await
}

fn apply(k: &Kubectl, yaml: &str) {
    let out = k.apply(yaml, &[]).expect("kubectl");
    assert!(out.success, "kubectl apply failed: {}", out.stderr);
}

fn secret_yaml(ns: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData: {{userdata: {value:?}}}\n"
    )
}

/// A Role in `ns` bound to `user`, with the given rules (YAML flow list).
fn role_yaml(ns: &str, name: &str, user: &str, rules: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}, namespace: {ns}}}\nrules: {rules}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    )
}

const DESK_RULES: &str = "[{apiGroups: [cyberdesk.io], resources: [cyberdesks], verbs: [get, list, watch, create, update, patch]}]";

fn can_i(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let as_operator = format!("--as={OPERATOR_SA}");
    all.push(&as_operator);
    let out = c.kubectl().run(&all, None).expect("kubectl");
    out.stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_only_from_secrets_the_requester_may_read() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "team-a").await;
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    apply(
        &admin,
        &secret_yaml(&ns, "creds", "#cloud-config\npassword: hunter2\n"),
    );
    apply(&admin, &secret_yaml(&ns, "alice-own", "#cloud-config\n"));
    apply(&admin, &role_yaml(&ns, "alice-desks", "alice", DESK_RULES));
    apply(&admin, &role_yaml(&ns, "bob-desks", "bob", DESK_RULES));
    apply(
        &admin,
        &role_yaml(
            &ns,
            "bob-secrets",
            "bob",
            "[{apiGroups: [''], resources: [secrets], verbs: [get]}]",
        ),
    );
    apply(
        &admin,
        &role_yaml(
            &ns,
            "alice-own-secret",
            "alice",
            "[{apiGroups: [''], resources: [secrets], resourceNames: [alice-own], verbs: [get]}]",
        ),
    );
    let alice = c.kubectl().as_user("alice", &["team-a"]);
    let bob = c.kubectl().as_user("bob", &["team-a"]);
    let with_secret = |name: &str, secret: &str| {
        desk_yaml(
            &ns,
            name,
            &format!("{{userDataSecretRef: {{name: {secret}, key: userdata}}}}"),
        )
    };

    // alice may create desks but not read creds: denied, same under a dry run, nothing stored.
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let out = alice
            .apply(&with_secret("stolen", "creds"), extra)
            .expect("kubectl");
        assert!(!out.success, "alice's desk was admitted ({extra:?})");
        for part in [
            "spec.userDataSecretRef.name",
            "\"creds\"",
            "\"get\"",
            "secrets",
            "alice",
        ] {
            assert!(
                out.stderr.contains(part),
                "{part:?} missing from: {}",
                out.stderr
            );
        }
    }
    let stored = admin
        .run(&["get", "cd", "stolen", "-n", &ns], None)
        .expect("kubectl");
    assert!(
        !stored.success && stored.stderr.contains("NotFound"),
        "{stored:?}"
    );

    // bob may read it: admitted.
    apply(&bob, &with_secret("bobs", "creds"));
    // alice with a Secret she may read is admitted.
    apply(&alice, &with_secret("mine", "alice-own"));

    // Re-pointing a set reference never reaches the access check: the CRD's immutability
    // rule refuses it first, whoever asks (here bob, who may read creds).
    let out = bob
        .apply(&with_secret("mine", "creds"), &[])
        .expect("kubectl");
    assert!(!out.success, "changing the reference was admitted");
    assert!(
        out.stderr
            .contains("spec.userDataSecretRef is immutable once set"),
        "{}",
        out.stderr
    );
}

/// A reference added by an UPDATE (allowed by the CRD while none is set, and by the webhook
/// while the desk has no VM) is checked like one on CREATE: the webhook asks the apiserver
/// whether the updating user may read the Secret (SubjectAccessReview) and refuses if not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_secret_reference_later_needs_get_on_the_secret() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "team-u").await;
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    apply(
        &admin,
        &secret_yaml(&ns, "creds", "#cloud-config\npassword: hunter2\n"),
    );
    apply(&admin, &secret_yaml(&ns, "alice-own", "#cloud-config\n"));
    apply(&admin, &role_yaml(&ns, "alice-desks", "alice", DESK_RULES));
    apply(
        &admin,
        &role_yaml(
            &ns,
            "alice-own-secret",
            "alice",
            "[{apiGroups: [''], resources: [secrets], resourceNames: [alice-own], verbs: [get]}]",
        ),
    );
    // A template that renders no VM keeps the desk without one, so the webhook's own
    // "immutable once the VM exists" rule stays out of the way.
    let tpl = format!("novm-{ns}");
    apply(
        &admin,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {tpl}, namespace: cyberdesk-system, labels: {{cyberdesk.io/template: \"true\"}}}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec: {{template: {{spec: {{hostname: '${{owner}}'}}}}}}\n"
        ),
    );
    let alice = c.kubectl().as_user("alice", &["team-u"]);
    let desk = |spec: &str| desk_yaml(&ns, "later", &format!("{{template: {tpl}{spec}}}"));
    // The webhook learns of a new template through its watch; until then it says not found.
    eventually(Duration::from_secs(15), "alice's desk admitted", || async {
        alice.apply(&desk(""), &[]).ok()?.success.then_some(())
    })
    .await;
    let apis = Apis::new(&client, &ns);
    let failed = apis
        .wait_phase("later", "Failed", Duration::from_secs(30))
        .await;
    assert!(
        failed.status.and_then(|s| s.virtual_machine_ref).is_none(),
        "the desk has a VM"
    );

    let with_ref = |secret: &str| {
        desk(&format!(
            ", userDataSecretRef: {{name: {secret}, key: userdata}}"
        ))
    };
    for extra in [&["--dry-run=server"][..], &[][..]] {
        let out = alice.apply(&with_ref("creds"), extra).expect("kubectl");
        assert!(!out.success, "alice added creds ({extra:?})");
        assert!(
            out.stderr
                .contains("user \"alice\" may not read Secret \"creds\" in namespace")
                && out.stderr.contains("spec.userDataSecretRef.name"),
            "not the access check's refusal: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("immutable"), "{}", out.stderr);
    }
    let stored = apis.desks.get("later").await.expect("desk");
    assert!(stored.spec.user_data_secret_ref.is_none(), "{stored:?}");
    // The same UPDATE naming a Secret she may read is admitted: nothing else refused it.
    apply(&alice, &with_ref("alice-own"));
}

/// A desk from a pool gets the pool's user data: its creator must be granted the pool
/// (`use` on `cyberdeskpools`), or anyone allowed to create desks would read the pool's
/// Secret from inside a VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_desk_needs_use_on_its_pool() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "pool-use").await;
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    apply(
        &admin,
        &secret_yaml(&ns, "pool-creds", "#cloud-config\npassword: hunter2\n"),
    );
    apply(
        &admin,
        &format!(
            "apiVersion: cyberdesk.io/v1alpha1\nkind: CyberdeskPool\nmetadata: {{name: warm, namespace: {ns}}}\nspec: {{size: 0, userDataSecretRef: {{name: pool-creds, key: userdata}}}}\n"
        ),
    );
    apply(&admin, &role_yaml(&ns, "alice-desks", "alice", DESK_RULES));
    apply(&admin, &role_yaml(&ns, "bob-desks", "bob", DESK_RULES));
    apply(
        &admin,
        &role_yaml(
            &ns,
            "bob-pool",
            "bob",
            "[{apiGroups: [cyberdesk.io], resources: [cyberdeskpools], resourceNames: [warm], verbs: [use]}]",
        ),
    );
    let alice = c.kubectl().as_user("alice", &["team-a"]);
    let bob = c.kubectl().as_user("bob", &["team-a"]);
    // alice may create desks, but neither read pool-creds nor use the pool: denied, the
    // same under a dry run, and nothing stored.
    let pooled = |name: &str| desk_yaml(&ns, name, "{pool: warm, timeoutMs: 600000}");
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let out = alice.apply(&pooled("borrowed"), extra).expect("kubectl");
        assert!(!out.success, "alice's pooled desk was admitted ({extra:?})");
        for part in [
            "spec.pool",
            "may not use CyberdeskPool \"warm\"",
            "\"use\"",
            "cyberdeskpools",
            "alice",
        ] {
            assert!(
                out.stderr.contains(part),
                "{part:?} missing from: {}",
                out.stderr
            );
        }
    }
    let stored = admin
        .run(&["get", "cd", "borrowed", "-n", &ns], None)
        .expect("kubectl");
    assert!(
        !stored.success && stored.stderr.contains("NotFound"),
        "{stored:?}"
    );
    // bob was granted the pool (not its Secret): admitted.
    apply(&bob, &pooled("granted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_template_passes_the_secret_by_reference_and_the_operator_cannot_read_it() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "byref").await;
    let _sim = Simulator::start(
        client.clone(),
        SimulatorOptions {
            namespace: Some(ns.clone()),
            ..Default::default()
        },
    );
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    apply(
        &admin,
        &secret_yaml(&ns, "cloud", "#cloud-config\npassword: hunter2\n"),
    );
    apply(
        &admin,
        &desk_yaml(
            &ns,
            "byref",
            "{userDataSecretRef: {name: cloud, key: userdata}}",
        ),
    );
    let apis = Apis::new(&client, &ns);
    apis.wait_phase("byref", "Running", Duration::from_secs(30))
        .await;

    let vm_yaml = admin
        .run(
            &["get", "vm", "cyberdesk-byref", "-n", &ns, "-o", "yaml"],
            None,
        )
        .expect("kubectl")
        .ok()
        .expect("get vm");
    use base64::Engine;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode("#cloud-config\npassword: hunter2\n");
    assert!(
        !vm_yaml.contains("hunter2") && !vm_yaml.contains(&b64),
        "Secret value in the VM:\n{vm_yaml}"
    );
    assert!(!vm_yaml.contains("userDataBase64"), "{vm_yaml}");
    let vm = apis.vms.get("cyberdesk-byref").await.expect("vm");
    let vm = serde_json::to_value(&vm).expect("json");
    let volumes = vm
        .pointer("/spec/template/spec/volumes")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let by_ref = volumes
        .iter()
        .filter_map(|v| v.pointer("/cloudInitNoCloud/secretRef/name"))
        .any(|n| n == "cloud");
    assert!(
        by_ref,
        "no cloudInitNoCloud.secretRef to the Secret: {volumes:?}"
    );

    // Least privilege: the operator's identity can read no Secret outside its namespace and
    // cannot create webhook configurations.
    assert_eq!(can_i(&c, &["get", "secrets", "-n", &ns]), "no");
    assert_eq!(can_i(&c, &["get", "secrets", "-n", "kube-system"]), "no");
    assert_eq!(
        can_i(&c, &["create", "mutatingwebhookconfigurations"]),
        "no"
    );
    assert_eq!(
        can_i(&c, &["create", "validatingwebhookconfigurations"]),
        "no"
    );
    assert_eq!(
        can_i(&c, &["create", "subjectaccessreviews.authorization.k8s.io"]),
        "yes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_limited_to_the_namespaces_they_allow() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let team_a = namespace(&client, "tpl-team-a").await;
    let team_b = namespace(&client, "tpl-team-b").await;
    wait_webhooks_active(&c, &team_b).await;
    let admin = c.kubectl();
    let tpl = format!("gpu-{team_a}");
    apply(
        &admin,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {tpl}\n  namespace: cyberdesk-system\n  labels: {{cyberdesk.io/template: \"true\"}}\n  annotations: {{cyberdesk.io/allowed-namespaces: \"{team_a}\"}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec: {{template: {{spec: {{domain: {{devices: {{}}}}}}}}}}\n"
        ),
    );
    let spec = format!("{{template: {tpl}}}");
    // The webhook's template catalog is a watch: give it a moment to see the new ConfigMap.
    let denied = eventually(
        Duration::from_secs(15),
        "a denial naming the template",
        || async {
            let out = admin.apply(&desk_yaml(&team_b, "gpu", &spec), &[]).ok()?;
            (!out.success && out.stderr.contains("may not be used in namespace"))
                .then_some(out.stderr)
        },
    )
    .await;
    assert!(
        denied.contains("spec.template") && denied.contains(&team_b),
        "{denied}"
    );
    apply(&admin, &desk_yaml(&team_a, "gpu", &spec));

    // A ConfigMap without the opt-in label is no template. A labelled one created after it
    // and seen by the webhook proves the watch had time to see both.
    apply(
        &admin,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plain-{team_a}, namespace: cyberdesk-system}}\ndata: {{template.yaml: x}}\n"
        ),
    );
    apply(
        &admin,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: sentinel-{team_a}, namespace: cyberdesk-system, labels: {{cyberdesk.io/template: \"true\"}}}}\ndata: {{template.yaml: x}}\n"
        ),
    );
    let sentinel = desk_yaml(
        &team_a,
        "sentinel",
        &format!("{{template: sentinel-{team_a}}}"),
    );
    eventually(
        Duration::from_secs(15),
        "the sentinel template admitted",
        || async {
            admin
                .apply(&sentinel, &["--dry-run=server"])
                .ok()?
                .success
                .then_some(())
        },
    )
    .await;
    let out = admin
        .apply(
            &desk_yaml(&team_a, "plain", &format!("{{template: plain-{team_a}}}")),
            &[],
        )
        .expect("kubectl");
    assert!(
        !out.success && out.stderr.contains("cyberdesk.io/template=true"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desks_in_the_operator_namespace_are_defaulted_and_validated() {
    let (c, _op) = setup().await;
    wait_webhooks_active(&c, "cyberdesk-system").await;
    let admin = c.kubectl();
    // A server-side dry run shows what admission did, before any reconcile could.
    let out = admin
        .apply(
            &desk_yaml("cyberdesk-system", "own-ns", "{}"),
            &["--dry-run=server", "-o", "json"],
        )
        .expect("kubectl")
        .ok()
        .expect("dry run");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["spec"]["timeoutMs"], 3_600_000);
    assert_eq!(v["metadata"]["finalizers"][0], "cyberdesk.io/vm-cleanup");
    let out = admin
        .apply(
            &desk_yaml("cyberdesk-system", "too-long", "{timeoutMs: 2700000000}"),
            &[],
        )
        .expect("kubectl");
    assert!(
        !out.success && out.stderr.contains("spec.timeoutMs"),
        "{}",
        out.stderr
    );
}
