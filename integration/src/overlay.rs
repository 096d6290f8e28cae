//! A kustomize overlay as it ships: rendered by kubectl, its RBAC installed as the admin
//! would, and the flags its Deployment gives the operator.

use serde::Deserialize as _;
use serde_yaml::Value;

use crate::cluster::Cluster;
use crate::workspace::repo_path;

/// The kinds that make up the operator's identity and rights.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The objects `kubectl kustomize <dir>` renders (`dir` relative to the repository root).
pub fn render(c: &Cluster, dir: &str) -> Vec<Value> {
    let path = repo_path(dir).display().to_string();
    let out = c
        .kubectl()
        .run(&["kustomize", &path], None)
        .expect("kubectl")
        .ok()
        .unwrap_or_else(|e| panic!("kustomize {dir}: {e}"));
    serde_yaml::Deserializer::from_str(&out)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

/// Applies the rendered ServiceAccount and RBAC objects, and nothing else, as the admin: the
/// operator then runs with exactly the rights the overlay ships.
pub fn install_rbac(c: &Cluster, objects: &[Value]) {
    for object in objects.iter().filter(|o| RBAC_KINDS.contains(&kind(o))) {
        let yaml = serde_yaml::to_string(object).expect("YAML");
        let out = c
            .kubectl()
            .apply(&yaml, &["--server-side", "--force-conflicts"])
            .expect("kubectl");
        assert!(out.success, "applying {}: {}", kind(object), out.stderr);
    }
}

/// The operator container's arguments after `run`, as the overlay's Deployment gives them.
pub fn operator_flags(objects: &[Value]) -> Vec<String> {
    let deployment = objects
        .iter()
        .find(|o| kind(o) == "Deployment")
        .expect("the overlay renders a Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("container args");
    args.iter()
        .filter_map(Value::as_str)
        .skip_while(|a| *a == "run")
        .map(str::to_string)
        .collect()
}

/// The platform overlay (`manifests/overlays/platform`) installed as its tests need it: the
/// APIs, the desk and VM namespaces, and the overlay's RBAC as rendered. Returns the
/// operator flags its Deployment gives, without `--ready-url` (each test points that at
/// its own recording server, or leaves it out).
pub async fn install_platform(c: &Cluster) -> Vec<String> {
    crate::cluster::install_apis(c).await;
    for ns in ["cyberdesk-system", "kubevirt"] {
        let _ = c.kubectl().run(&["create", "namespace", ns], None);
    }
    let objects = render(c, "manifests/overlays/platform");
    install_rbac(c, &objects);
    operator_flags(&objects)
        .into_iter()
        .filter(|f| !f.starts_with("--ready-url="))
        .collect()
}
