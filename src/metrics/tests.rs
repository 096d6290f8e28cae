use super::*;

#[test]
fn every_family_is_exported_from_the_start() {
    let m = Metrics::new("pod-a", &["kube"]).expect("metrics");
    let text = m.render().expect("render");
    for family in FAMILIES.iter().filter(|f| !PER_POOL.contains(f)) {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "missing {family}"
        );
    }
    assert!(text.contains(r#"cyberdesk_leader{identity="pod-a"} 0"#));
    assert!(text.contains(&format!(
        "cyberdesk_build_info{{revision=\"{}\",version=\"{}\"}} 1",
        env!("CYBERDESK_REVISION"),
        env!("CARGO_PKG_VERSION")
    )));
    #[cfg(target_os = "linux")]
    assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
}

/// Every metric the dashboard and the alerts query is one the operator exports.
#[test]
fn dashboard_and_rules_query_only_exported_families() {
    let shipped = [
        include_str!("../../manifests/monitoring/grafana-dashboard.json"),
        include_str!("../../manifests/monitoring/prometheusrule.yaml"),
    ];
    for text in shipped {
        let mut rest = text;
        while let Some(at) = rest.find("cyberdesk_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| FAMILIES.contains(f)))
                .unwrap_or(&name);
            assert!(
                FAMILIES.contains(&family),
                "{family} is queried but not exported"
            );
        }
    }
}
