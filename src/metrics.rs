//! The Prometheus registry and every metric family the operator exports. All families are
//! registered, and their known label sets initialised, at start-up, so dashboards and
//! alerts see a zero rather than nothing.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::CyberdeskPhase;

/// Reconcile outcomes (`cyberdesk_reconcile_total{result}`).
pub const RESULTS: &[&str] = &["success", "requeue", "error"];
/// Timed operations (`cyberdesk_operation_duration_seconds{operation}`).
pub const OPERATIONS: &[&str] = &[
    "create_vm",
    "stop_vm",
    "delete_vm",
    "update_status",
    "reconcile",
    "claim_vm",
    "reconcile_pool",
];

/// `cyberdesk_pool_claims_total{result}`: a desk got a pool VM (hit), found none ready
/// (miss, then boots its own), or lost a VM to another desk's claim (conflict, then tries
/// the next).
pub const CLAIM_RESULTS: &[&str] = &["hit", "miss", "conflict"];
/// `cyberdesk_pool_vms_replaced_total{reason}`: unclaimed pool VMs taken back and booted
/// again, because they failed or outlived the pool's `maxIdleMs`.
pub const REPLACE_REASONS: &[&str] = &["failed", "expired"];
/// `cyberdesk_pool_vms{state}`.
pub const POOL_STATES: &[&str] = &["ready", "booting", "claimed", "desired"];
/// `cyberdesk_desk_start_seconds{source}`: cold desks of no pool are `none`.
pub const START_SOURCES: &[&str] = &["pool", "cold", "none"];
pub const WEBHOOKS: &[&str] = &["mutate", "validate"];
pub const ADMISSION_OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT"];
/// `allowed` label: true, false, or error (the review could not be processed).
pub const ADMISSION_VERDICTS: &[&str] = &["true", "false", "error"];

/// `cyberdesk_secret_access_reviews_total{result}`: the requester may read the Secret, may
/// not, or the SubjectAccessReview failed (the webhook then denies).
pub const ACCESS_RESULTS: &[&str] = &["allowed", "denied", "error"];
/// `...{result="throttled",source="api"}`: a check that missed the cache past
/// `--access-review-rate`; the apiserver was not asked and the webhook denies.
pub const ACCESS_THROTTLED: &str = "throttled";
/// `...{source}`: asked the apiserver, or answered from the short-lived cache.
pub const ACCESS_SOURCES: &[&str] = &["api", "cache"];

/// The names the previous operator documented, plus the ones this operator adds.
pub const FAMILIES: &[&str] = &[
    "cyberdesk_vm_created_total",
    "cyberdesk_vm_deleted_total",
    "cyberdesk_vm_timeout_total",
    "cyberdesk_active_vm_count",
    "cyberdesk_active_vms",
    "cyberdesk_build_info",
    "cyberdesk_desks",
    "cyberdesk_operation_duration_seconds",
    "cyberdesk_reconcile_total",
    "cyberdesk_reconcile_errors_total",
    "cyberdesk_admission_requests_total",
    "cyberdesk_admission_duration_seconds",
    "cyberdesk_leader",
    "cyberdesk_webhook_cert_expiry_timestamp_seconds",
    "cyberdesk_policy_reload_total",
    "cyberdesk_timeout_lag_seconds",
    "cyberdesk_secret_access_reviews_total",
    "cyberdesk_webhook_connections_rejected_total",
    "cyberdesk_webhook_connections_open",
    "cyberdesk_events_dropped_total",
    "cyberdesk_orphan_vms_deleted_total",
    "cyberdesk_notifications_total",
    "cyberdesk_pool_claims_total",
    "cyberdesk_pool_vms",
    "cyberdesk_desk_start_seconds",
    "cyberdesk_pool_vms_replaced_total",
];

/// Families labelled by pool: they appear with the first pool the leader sees.
pub const PER_POOL: &[&str] = &["cyberdesk_pool_vms"];

/// Why the webhook server gave up on a connection or request
/// (`cyberdesk_webhook_connections_rejected_total{reason}`).
pub const REJECT_REASONS: &[&str] = &[
    "capacity",
    "handshake_timeout",
    "header_timeout",
    "request_timeout",
    "per_source",
    "memory_budget",
    "too_large",
];

#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub vm_created: IntCounter,
    pub vm_deleted: IntCounter,
    pub vm_timeout: IntCounter,
    /// `cyberdesk_active_vm_count`, the previous operator's name (kept for its dashboards).
    pub active_vm_count: IntGauge,
    /// `cyberdesk_active_vms`: the same count under a name Prometheus' rules allow (a
    /// `_count` suffix belongs to summaries and histograms).
    pub active_vms: IntGauge,
    pub build_info: IntGaugeVec,
    pub desks: IntGaugeVec,
    pub operation_duration: HistogramVec,
    pub reconcile_total: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub admission_requests: IntCounterVec,
    pub admission_duration: HistogramVec,
    pub leader: IntGaugeVec,
    pub cert_expiry: Gauge,
    pub policy_reload: IntCounterVec,
    pub timeout_lag: Histogram,
    pub secret_access_reviews: IntCounterVec,
    pub webhook_connections_rejected: IntCounterVec,
    pub webhook_connections_open: IntGauge,
    pub events_dropped: IntCounter,
    pub orphans_deleted: IntCounter,
    pub notifications: IntCounterVec,
    pub pool_claims: IntCounterVec,
    pub pool_vms: IntGaugeVec,
    pub desk_start: HistogramVec,
    pub pool_replaced: IntCounterVec,
}

impl Metrics {
    /// `error_labels`: every value `cyberdesk_reconcile_errors_total{error}` can take.
    pub fn new(identity: &str, error_labels: &[&str]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Self {
            vm_created: IntCounter::new("cyberdesk_vm_created_total", "VirtualMachines created")?,
            vm_deleted: IntCounter::new("cyberdesk_vm_deleted_total", "VirtualMachines deleted")?,
            vm_timeout: IntCounter::new(
                "cyberdesk_vm_timeout_total",
                "Cyberdesks that reached their timeout",
            )?,
            active_vms: IntGauge::new("cyberdesk_active_vms", "VirtualMachines managed right now")?,
            build_info: IntGaugeVec::new(
                Opts::new(
                    "cyberdesk_build_info",
                    "1, labelled with the operator's version and the git revision it was built from",
                ),
                &["version", "revision"],
            )?,
            active_vm_count: IntGauge::new(
                "cyberdesk_active_vm_count",
                "VirtualMachines managed right now",
            )?,
            desks: IntGaugeVec::new(
                Opts::new(
                    "cyberdesk_desks",
                    "Cyberdesks by phase, as the leader's cache holds them (0 on followers)",
                ),
                &["phase"],
            )?,
            operation_duration: HistogramVec::new(
                HistogramOpts::new(
                    "cyberdesk_operation_duration_seconds",
                    "Duration of operator operations",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0,
                ]),
                &["operation"],
            )?,
            reconcile_total: IntCounterVec::new(
                Opts::new("cyberdesk_reconcile_total", "Reconcile passes by result"),
                &["result"],
            )?,
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_reconcile_errors_total",
                    "Reconcile errors by kind",
                ),
                &["error"],
            )?,
            admission_requests: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_admission_requests_total",
                    "Admission reviews answered",
                ),
                &["webhook", "operation", "allowed"],
            )?,
            admission_duration: HistogramVec::new(
                HistogramOpts::new(
                    "cyberdesk_admission_duration_seconds",
                    "Time to answer an admission review",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
                &["webhook"],
            )?,
            leader: IntGaugeVec::new(
                Opts::new(
                    "cyberdesk_leader",
                    "1 while this replica holds the leader Lease",
                ),
                &["identity"],
            )?,
            cert_expiry: Gauge::new(
                "cyberdesk_webhook_cert_expiry_timestamp_seconds",
                "Unix time at which the webhook serving certificate expires",
            )?,
            policy_reload: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_policy_reload_total",
                    "Policy set reloads by result",
                ),
                &["result"],
            )?,
            timeout_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "cyberdesk_timeout_lag_seconds",
                    "Delay between a Cyberdesk's expiry time and the moment its VM was halted",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
                ]),
            )?,
            secret_access_reviews: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_secret_access_reviews_total",
                    "Checks that a Cyberdesk's requester may read its user-data Secret, by result and source",
                ),
                &["result", "source"],
            )?,
            webhook_connections_rejected: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_webhook_connections_rejected_total",
                    "Webhook connections or requests the server gave up on, by the limit they hit",
                ),
                &["reason"],
            )?,
            webhook_connections_open: IntGauge::new(
                "cyberdesk_webhook_connections_open",
                "Webhook connections open right now",
            )?,
            events_dropped: IntCounter::new(
                "cyberdesk_events_dropped_total",
                "Events not published because the event queue was full",
            )?,
            orphans_deleted: IntCounter::new(
                "cyberdesk_orphan_vms_deleted_total",
                "VirtualMachines in --vm-namespace deleted by the orphan sweep because their Cyberdesk was gone",
            )?,
            notifications: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_notifications_total",
                    "Attempts to tell the platform about a desk, by sink and result",
                ),
                &["sink", "result"],
            )?,
            pool_claims: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_pool_claims_total",
                    "Claims of warm-pool VMs by desks, by result (hit, miss, conflict)",
                ),
                &["result"],
            )?,
            pool_vms: IntGaugeVec::new(
                Opts::new(
                    "cyberdesk_pool_vms",
                    "VMs of each warm pool by state (ready, booting, claimed) and its desired size, as the leader last saw them",
                ),
                &["pool_namespace", "pool", "state"],
            )?,
            desk_start: HistogramVec::new(
                HistogramOpts::new(
                    "cyberdesk_desk_start_seconds",
                    "Time from a Cyberdesk's creation to its first Running, by where its VM came from (pool, cold, none)",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                ]),
                &["source"],
            )?,
            pool_replaced: IntCounterVec::new(
                Opts::new(
                    "cyberdesk_pool_vms_replaced_total",
                    "Unclaimed warm-pool VMs taken back to be booted afresh, by reason (failed, expired)",
                ),
                &["reason"],
            )?,
            registry,
        };
        m.register_all()?;
        for result in CLAIM_RESULTS {
            m.pool_claims.with_label_values(&[result]);
        }
        for source in START_SOURCES {
            m.desk_start.with_label_values(&[source]);
        }
        for reason in REPLACE_REASONS {
            m.pool_replaced.with_label_values(&[reason]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CYBERDESK_REVISION")])
            .set(1);
        for sink in crate::notify::SINKS {
            for result in crate::notify::RESULTS {
                m.notifications.with_label_values(&[sink, result]);
            }
        }
        for phase in CyberdeskPhase::ALL {
            m.desks.with_label_values(&[phase.as_str()]);
        }
        for op in OPERATIONS {
            m.operation_duration.with_label_values(&[op]);
        }
        for result in RESULTS {
            m.reconcile_total.with_label_values(&[result]);
        }
        for error in error_labels {
            m.reconcile_errors.with_label_values(&[error]);
        }
        for webhook in WEBHOOKS {
            m.admission_duration.with_label_values(&[webhook]);
            for op in ADMISSION_OPERATIONS {
                for verdict in ADMISSION_VERDICTS {
                    m.admission_requests
                        .with_label_values(&[webhook, op, verdict]);
                }
            }
        }
        m.leader.with_label_values(&[identity]).set(0);
        for result in ["success", "error"] {
            m.policy_reload.with_label_values(&[result]);
        }
        for reason in REJECT_REASONS {
            m.webhook_connections_rejected.with_label_values(&[reason]);
        }
        for result in ACCESS_RESULTS {
            for source in ACCESS_SOURCES {
                m.secret_access_reviews.with_label_values(&[result, source]);
            }
        }
        m.secret_access_reviews
            .with_label_values(&[ACCESS_THROTTLED, "api"]);
        Ok(m)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.vm_created.clone()))?;
        r.register(Box::new(self.vm_deleted.clone()))?;
        r.register(Box::new(self.vm_timeout.clone()))?;
        r.register(Box::new(self.active_vm_count.clone()))?;
        r.register(Box::new(self.active_vms.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        // Linux only (procfs); elsewhere the family is simply absent.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        r.register(Box::new(self.desks.clone()))?;
        r.register(Box::new(self.operation_duration.clone()))?;
        r.register(Box::new(self.reconcile_total.clone()))?;
        r.register(Box::new(self.reconcile_errors.clone()))?;
        r.register(Box::new(self.admission_requests.clone()))?;
        r.register(Box::new(self.admission_duration.clone()))?;
        r.register(Box::new(self.leader.clone()))?;
        r.register(Box::new(self.cert_expiry.clone()))?;
        r.register(Box::new(self.policy_reload.clone()))?;
        r.register(Box::new(self.timeout_lag.clone()))?;
        r.register(Box::new(self.secret_access_reviews.clone()))?;
        r.register(Box::new(self.webhook_connections_rejected.clone()))?;
        r.register(Box::new(self.webhook_connections_open.clone()))?;
        r.register(Box::new(self.events_dropped.clone()))?;
        r.register(Box::new(self.orphans_deleted.clone()))?;
        r.register(Box::new(self.notifications.clone()))?;
        r.register(Box::new(self.pool_claims.clone()))?;
        r.register(Box::new(self.pool_vms.clone()))?;
        r.register(Box::new(self.desk_start.clone()))?;
        r.register(Box::new(self.pool_replaced.clone()))?;
        Ok(())
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

#[cfg(test)]
mod tests {
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
            include_str!("../manifests/monitoring/grafana-dashboard.json"),
            include_str!("../manifests/monitoring/prometheusrule.yaml"),
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
}
