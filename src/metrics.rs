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

/// `cyberdesk_notifications_total{sink}`: the ready call and the platform's state table.
pub const NOTIFICATION_SINKS: &[&str] = &["ready", "platform_state"];
/// `cyberdesk_notifications_total{result}`: an attempt succeeded, an attempt failed and
/// another follows, or the last attempt failed.
pub const NOTIFICATION_RESULTS: &[&str] = &["delivered", "retried", "gave_up"];
/// `cyberdesk_policy_reload_total{result}`.
pub const RELOAD_RESULTS: &[&str] = &["success", "error"];

/// Declares every family once: its field, type, name, help, labels and buckets. From that
/// one list come the `Metrics` struct, the registration and [`FAMILIES`], so a family cannot
/// be registered without being exported and listed (the README's table is made from it).
macro_rules! families {
    ($(
        $(#[$doc:meta])*
        $field:ident: $ty:ident = $name:literal, $help:literal
            $(, labels [$($label:literal),* $(,)?])?
            $(, buckets [$($bucket:literal),* $(,)?])?;
    )*) => {
        #[derive(Clone, Debug)]
        pub struct Metrics {
            registry: Registry,
            $($(#[$doc])* pub $field: $ty,)*
        }

        /// The names the previous operator documented, plus the ones this operator adds.
        pub const FAMILIES: &[&str] = &[$($name),*];

        impl Metrics {
            /// Every family, made and registered in `registry`.
            fn register_families(registry: Registry) -> Result<Self, prometheus::Error> {
                let m = Self {
                    $($field: <$ty as Family>::make(Shape {
                        name: $name,
                        help: $help,
                        labels: &[$($($label),*)?],
                        buckets: None$(.or(Some(vec![$($bucket),*])))?,
                    })?,)*
                    registry,
                };
                $(m.registry.register(Box::new(m.$field.clone()))?;)*
                Ok(m)
            }
        }
    };
}

families! {
    vm_created: IntCounter = "cyberdesk_vm_created_total", "VirtualMachines created";
    vm_deleted: IntCounter = "cyberdesk_vm_deleted_total", "VirtualMachines deleted";
    vm_timeout: IntCounter = "cyberdesk_vm_timeout_total", "Cyberdesks that reached their timeout";
    /// `cyberdesk_active_vm_count`, the previous operator's name (kept for its dashboards).
    active_vm_count: IntGauge = "cyberdesk_active_vm_count", "VirtualMachines managed right now";
    /// `cyberdesk_active_vms`: the same count under a name Prometheus' rules allow (a
    /// `_count` suffix belongs to summaries and histograms).
    active_vms: IntGauge = "cyberdesk_active_vms", "VirtualMachines managed right now";
    build_info: IntGaugeVec = "cyberdesk_build_info",
        "1, labelled with the operator's version and the git revision it was built from",
        labels ["version", "revision"];
    desks: IntGaugeVec = "cyberdesk_desks",
        "Cyberdesks by phase, as the leader's cache holds them (0 on followers)",
        labels ["phase"];
    operation_duration: HistogramVec = "cyberdesk_operation_duration_seconds",
        "Duration of operator operations",
        labels ["operation"],
        buckets [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
    reconcile_total: IntCounterVec = "cyberdesk_reconcile_total", "Reconcile passes by result",
        labels ["result"];
    reconcile_errors: IntCounterVec = "cyberdesk_reconcile_errors_total", "Reconcile errors by kind",
        labels ["error"];
    admission_requests: IntCounterVec = "cyberdesk_admission_requests_total",
        "Admission reviews answered",
        labels ["webhook", "operation", "allowed"];
    admission_duration: HistogramVec = "cyberdesk_admission_duration_seconds",
        "Time to answer an admission review",
        labels ["webhook"],
        buckets [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
    leader: IntGaugeVec = "cyberdesk_leader", "1 while this replica holds the leader Lease",
        labels ["identity"];
    cert_expiry: Gauge = "cyberdesk_webhook_cert_expiry_timestamp_seconds",
        "Unix time at which the webhook serving certificate expires";
    policy_reload: IntCounterVec = "cyberdesk_policy_reload_total", "Policy set reloads by result",
        labels ["result"];
    timeout_lag: Histogram = "cyberdesk_timeout_lag_seconds",
        "Delay between a Cyberdesk's expiry time and the moment its VM was halted",
        buckets [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
    secret_access_reviews: IntCounterVec = "cyberdesk_secret_access_reviews_total",
        "Checks that a Cyberdesk's requester may read its user-data Secret, by result and source",
        labels ["result", "source"];
    webhook_connections_rejected: IntCounterVec = "cyberdesk_webhook_connections_rejected_total",
        "Webhook connections or requests the server gave up on, by the limit they hit",
        labels ["reason"];
    webhook_connections_open: IntGauge = "cyberdesk_webhook_connections_open",
        "Webhook connections open right now";
    events_dropped: IntCounter = "cyberdesk_events_dropped_total",
        "Events not published because the event queue was full";
    orphans_deleted: IntCounter = "cyberdesk_orphan_vms_deleted_total",
        "VirtualMachines in --vm-namespace deleted by the orphan sweep because their Cyberdesk was gone";
    notifications: IntCounterVec = "cyberdesk_notifications_total",
        "Attempts to tell the platform about a desk, by sink and result",
        labels ["sink", "result"];
    pool_claims: IntCounterVec = "cyberdesk_pool_claims_total",
        "Claims of warm-pool VMs by desks, by result (hit, miss, conflict)",
        labels ["result"];
    pool_vms: IntGaugeVec = "cyberdesk_pool_vms",
        "VMs of each warm pool by state (ready, booting, claimed) and its desired size, as the leader last saw them",
        labels ["pool_namespace", "pool", "state"];
    desk_start: HistogramVec = "cyberdesk_desk_start_seconds",
        "Time from a Cyberdesk's creation to its first Running, by where its VM came from (pool, cold, none)",
        labels ["source"],
        buckets [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
    pool_replaced: IntCounterVec = "cyberdesk_pool_vms_replaced_total",
        "Unclaimed warm-pool VMs taken back to be booted afresh, by reason (failed, expired)",
        labels ["reason"];
}

/// What the table says of one family.
struct Shape {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: Option<Vec<f64>>,
}

impl Shape {
    /// A family without labels declared with some is a mistake in the table.
    fn unlabelled(&self) -> Result<Opts, prometheus::Error> {
        if self.labels.is_empty() {
            Ok(Opts::new(self.name, self.help))
        } else {
            Err(prometheus::Error::Msg(format!(
                "{} takes no labels but is declared with {:?}",
                self.name, self.labels
            )))
        }
    }

    fn histogram(&self) -> HistogramOpts {
        let opts = HistogramOpts::new(self.name, self.help);
        match &self.buckets {
            Some(b) => opts.buckets(b.clone()),
            None => opts,
        }
    }
}

/// The metric types the table uses, each made from its [`Shape`].
trait Family: Sized {
    fn make(shape: Shape) -> Result<Self, prometheus::Error>;
}

impl Family for IntCounter {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        IntCounter::with_opts(s.unlabelled()?)
    }
}
impl Family for IntGauge {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        IntGauge::with_opts(s.unlabelled()?)
    }
}
impl Family for Gauge {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        Gauge::with_opts(s.unlabelled()?)
    }
}
impl Family for Histogram {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        s.unlabelled()?;
        Histogram::with_opts(s.histogram())
    }
}
impl Family for IntCounterVec {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        IntCounterVec::new(Opts::new(s.name, s.help), s.labels)
    }
}
impl Family for IntGaugeVec {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        IntGaugeVec::new(Opts::new(s.name, s.help), s.labels)
    }
}
impl Family for HistogramVec {
    fn make(s: Shape) -> Result<Self, prometheus::Error> {
        HistogramVec::new(s.histogram(), s.labels)
    }
}

impl Metrics {
    /// `error_labels`: every value `cyberdesk_reconcile_errors_total{error}` can take.
    pub fn new(identity: &str, error_labels: &[&str]) -> Result<Self, prometheus::Error> {
        let m = Self::register_families(Registry::new())?;
        // Linux only (procfs); elsewhere the family is simply absent.
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CYBERDESK_REVISION")])
            .set(1);
        m.leader.with_label_values(&[identity]).set(0);
        m.zero_known_series(error_labels);
        Ok(m)
    }

    /// Every known label set at zero, so dashboards and alerts see a zero from the start.
    fn zero_known_series(&self, error_labels: &[&str]) {
        for result in CLAIM_RESULTS {
            self.pool_claims.with_label_values(&[result]);
        }
        for source in START_SOURCES {
            self.desk_start.with_label_values(&[source]);
        }
        for reason in REPLACE_REASONS {
            self.pool_replaced.with_label_values(&[reason]);
        }
        for sink in NOTIFICATION_SINKS {
            for result in NOTIFICATION_RESULTS {
                self.notifications.with_label_values(&[sink, result]);
            }
        }
        for phase in CyberdeskPhase::ALL {
            self.desks.with_label_values(&[phase.as_str()]);
        }
        for op in OPERATIONS {
            self.operation_duration.with_label_values(&[op]);
        }
        for result in RESULTS {
            self.reconcile_total.with_label_values(&[result]);
        }
        for error in error_labels {
            self.reconcile_errors.with_label_values(&[error]);
        }
        for webhook in WEBHOOKS {
            self.admission_duration.with_label_values(&[webhook]);
            for op in ADMISSION_OPERATIONS {
                for verdict in ADMISSION_VERDICTS {
                    self.admission_requests
                        .with_label_values(&[webhook, op, verdict]);
                }
            }
        }
        for result in RELOAD_RESULTS {
            self.policy_reload.with_label_values(&[result]);
        }
        for reason in REJECT_REASONS {
            self.webhook_connections_rejected
                .with_label_values(&[reason]);
        }
        for result in ACCESS_RESULTS {
            for source in ACCESS_SOURCES {
                self.secret_access_reviews
                    .with_label_values(&[result, source]);
            }
        }
        self.secret_access_reviews
            .with_label_values(&[ACCESS_THROTTLED, "api"]);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

#[cfg(test)]
mod tests;
