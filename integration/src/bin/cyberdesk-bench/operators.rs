//! The operators the sections start: their flags, and knowing when the apiserver really
//! calls their webhooks.

use std::time::Duration;

use cyberdesk_integration::cluster::Cluster;
use cyberdesk_integration::desks::desk_yaml;

/// `webhooks`: for [`OperatorProcess::start_serving_webhooks`], which adds the URL flags.
///
/// [`OperatorProcess::start_serving_webhooks`]: cyberdesk_integration::operator::OperatorProcess::start_serving_webhooks
pub fn operator_flags(webhooks: bool) -> Vec<String> {
    let mut f = vec![
        "--policy-dir=/nonexistent".to_string(),
        "--leader-election=false".to_string(),
    ];
    if !webhooks {
        f.push("--manage-webhook-config=false".into());
    }
    f
}

/// Waits until a server-side dry run of a desk in `ns` comes back with the mutating
/// webhook's finalizer: the apiserver trusts the operator's CA and calls it.
pub async fn until_webhooks_answer(c: &Cluster, ns: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        let out = c.kubectl().apply(
            &desk_yaml(ns, "probe", "{}"),
            &["--dry-run=server", "-o", "json"],
        )?;
        if out.stdout.contains("vm-cleanup") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the apiserver did not call the webhooks within 10 s")
}

/// Removes both webhook configurations, so that creates stop calling an operator that is
/// gone.
pub fn delete_webhook_configs(c: &Cluster) {
    let _ = c.kubectl().run(
        &[
            "delete",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            "--all",
        ],
        None,
    );
}
