//! The shipped alerts, proven with promtool (Debian's `prometheus` package, which
//! `make test` installs): `promtool check rules` on the rules exactly as they ship, and
//! `promtool test rules` on `manifests/monitoring/tests/alerts.test.yaml`, which gives
//! every alert a case where it fires, one where it does not, and one where it resolves.

use std::path::Path;
use std::process::Command;

use cyberdesk_integration::workspace::repo_path;

/// The `spec` of the shipped PrometheusRule: a plain Prometheus rule file.
fn shipped_rules() -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo_path("manifests/monitoring/prometheusrule.yaml"))
        .expect("prometheusrule.yaml");
    let rule: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    rule["spec"].clone()
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): `make test` installs Debian's prometheus package")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_shipped_alerts_fire_when_they_should_and_only_then() {
    let dir = std::env::temp_dir().join(format!("cyberdesk-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = shipped_rules();
    let write = |name: &str, value: &serde_yaml::Value| {
        std::fs::write(dir.join(name), serde_yaml::to_string(value).expect("YAML"))
            .expect("write rules");
    };

    // As shipped, annotation templates included.
    write("shipped.yaml", &spec);
    let (ok, text) = promtool(&["check", "rules", "shipped.yaml"], &dir);
    assert!(ok, "{text}");

    // Every alert has a test, a section in the troubleshooting guide, and a runbook link to
    // that section.
    let guide = std::fs::read_to_string(repo_path("docs/troubleshooting.md")).expect("guide");
    let tests = std::fs::read_to_string(repo_path("manifests/monitoring/tests/alerts.test.yaml"))
        .expect("alerts.test.yaml");
    // The one place the links' base is set (kustomize writes it into every runbook_url).
    let runbooks: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_path("manifests/monitoring/runbooks.yaml"))
            .expect("runbooks.yaml"),
    )
    .expect("runbooks.yaml parses");
    let base = runbooks["data"]["base"].as_str().expect("data.base");
    assert!(base.starts_with("https://"), "runbook base {base:?}");
    let mut plain = spec.clone();
    let groups = plain["groups"].as_sequence_mut().expect("groups");
    for group in groups.iter_mut() {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            let Some(alert) = rule["alert"].as_str().map(str::to_string) else {
                continue;
            };
            assert!(
                tests.contains(&format!("alertname: {alert}\n")),
                "{alert} has no promtool test"
            );
            assert!(
                guide.contains(&format!("\n### {alert}\n")),
                "{alert} has no section in docs/troubleshooting.md"
            );
            let runbook = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default();
            assert!(
                runbook == format!("{base}#{}", alert.to_lowercase()),
                "{alert}: runbook_url {runbook:?}"
            );
            // promtool compares annotations exactly; what fires is the expression and labels.
            if let Some(map) = rule.as_mapping_mut() {
                map.remove("annotations");
            }
        }
    }
    write("rules.yaml", &plain);
    std::fs::write(dir.join("alerts.test.yaml"), tests).expect("write tests");
    let (ok, text) = promtool(&["test", "rules", "alerts.test.yaml"], &dir);
    assert!(ok, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
