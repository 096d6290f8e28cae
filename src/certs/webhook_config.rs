//! The two webhook configurations (`cyberdesk-mutating`, `cyberdesk-validating`): rendered
//! for installers and GitOps users (`cyberdesk-operator webhook-config`, the manifests), and
//! kept trusted by putting the CA bundle into them. The operator never creates them and
//! never owns any field but `caBundle`, so an admin's `timeoutSeconds` or selector stays.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::model::names;

/// How the apiserver reaches the webhook server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookTarget {
    /// In-cluster: through the Service (the usual case).
    Service {
        name: String,
        namespace: String,
        port: u16,
    },
    /// By URL, e.g. `https://127.0.0.1:8443` for a local control plane.
    Url(String),
}

/// Everything that varies between installations.
#[derive(Clone, Debug)]
pub struct WebhookConfigParams {
    pub target: WebhookTarget,
    pub timeout_seconds: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("cannot build the webhook configuration: {0}")]
    Render(#[from] serde_json::Error),
    #[error("cannot print the webhook configuration: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error(
        "cannot put the CA bundle into webhook configuration {name} (install it with the manifests or `cyberdesk-operator webhook-config` first): {source}"
    )]
    Apply {
        name: &'static str,
        source: kube::Error,
    },
    #[error("cannot read webhook configuration {name}: {source}")]
    Read {
        name: &'static str,
        source: kube::Error,
    },
}

/// The webhook names inside the two configurations.
pub const MUTATING_WEBHOOK: &str = "mutate.cyberdesk.io";
pub const VALIDATING_WEBHOOK: &str = "validate.cyberdesk.io";

fn client_config(target: &WebhookTarget, path: &str, ca_pem: Option<&str>) -> Value {
    let mut cc = match target {
        WebhookTarget::Service {
            name,
            namespace,
            port,
        } => json!({
            "service": {"name": name, "namespace": namespace, "path": path, "port": port}
        }),
        WebhookTarget::Url(base) => json!({"url": format!("{}{path}", base.trim_end_matches('/'))}),
    };
    if let Some(ca) = ca_pem {
        cc["caBundle"] = json!(B64.encode(ca));
    }
    cc
}

fn webhook(
    name: &str,
    path: &str,
    (resources, operations): (&[&str], &[&str]),
    params: &WebhookConfigParams,
    ca_pem: Option<&str>,
) -> Value {
    json!({
        "name": name,
        "rules": [{
            "apiGroups": ["cyberdesk.io"], "apiVersions": ["v1alpha1"], "resources": resources,
            "operations": operations, "scope": "Namespaced",
        }],
        "clientConfig": client_config(&params.target, path, ca_pem),
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "timeoutSeconds": params.timeout_seconds,
        "admissionReviewVersions": ["v1"],
        "matchPolicy": "Equivalent",
    })
}

fn metadata(name: &str) -> Value {
    json!({"name": name, "labels": {"app.kubernetes.io/name": "cyberdesk-operator"}})
}

/// The mutating configuration as JSON (with `caBundle` when given).
pub fn mutating(params: &WebhookConfigParams, ca_pem: Option<&str>) -> Value {
    let mut hook = webhook(
        MUTATING_WEBHOOK,
        "/mutate",
        (&["cyberdesks"], &["CREATE"]),
        params,
        ca_pem,
    );
    hook["reinvocationPolicy"] = json!("Never");
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata(names::MUTATING_WEBHOOK_CONFIG),
        "webhooks": [hook],
    })
}

/// The validating configuration as JSON (with `caBundle` when given).
pub fn validating(params: &WebhookConfigParams, ca_pem: Option<&str>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": metadata(names::VALIDATING_WEBHOOK_CONFIG),
        "webhooks": [webhook(
            VALIDATING_WEBHOOK,
            "/validate",
            (&["cyberdesks", "cyberdeskpools"], &["CREATE", "UPDATE"]),
            params,
            ca_pem,
        )],
    })
}

/// Both configurations as a two-document YAML stream.
pub fn render_yaml(
    params: &WebhookConfigParams,
    ca_pem: Option<&str>,
) -> Result<String, ConfigurationError> {
    let m: MutatingWebhookConfiguration = serde_json::from_value(mutating(params, ca_pem))?;
    let v: ValidatingWebhookConfiguration = serde_json::from_value(validating(params, ca_pem))?;
    Ok(format!(
        "{}---\n{}",
        serde_yaml::to_string(&m)?,
        serde_yaml::to_string(&v)?
    ))
}

/// The apply configuration that sets only `caBundle` of one webhook: the webhooks list is a
/// map keyed by name, so server-side apply merges it into the existing entry.
fn ca_bundle_patch(kind: &str, name: &str, webhook: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [{"name": webhook, "clientConfig": {"caBundle": B64.encode(ca_pem)}}],
    })
}

/// Puts `ca_pem` into both existing configurations by server-side apply of the caBundle
/// fields alone, under their own field manager. Forced, so the bundle is ours even if a
/// person pasted one in; nothing else is touched, and a configuration that does not
/// exist is an error (the operator may not create them). Both are tried even if one fails:
/// a missing mutating configuration must not leave the validating one untrusted.
pub async fn apply_ca_bundle(
    client: &kube::Client,
    ca_pem: &str,
) -> Result<(), ConfigurationError> {
    let mutating = apply_one::<MutatingWebhookConfiguration>(
        client,
        names::MUTATING_WEBHOOK_CONFIG,
        MUTATING_WEBHOOK,
        ca_pem,
    )
    .await;
    let validating = apply_one::<ValidatingWebhookConfiguration>(
        client,
        names::VALIDATING_WEBHOOK_CONFIG,
        VALIDATING_WEBHOOK,
        ca_pem,
    )
    .await;
    mutating.and(validating)
}

/// Every `caBundle` both configurations publish now, concatenated (PEM): the CAs the
/// apiserver already trusts, and so the trust anchor for the Secret's `ca.crt`.
pub async fn published_ca_bundles(client: &kube::Client) -> Result<String, ConfigurationError> {
    let read = |name: &'static str| move |source| ConfigurationError::Read { name, source };
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(names::MUTATING_WEBHOOK_CONFIG)
        .await
        .map_err(read(names::MUTATING_WEBHOOK_CONFIG))?;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(names::VALIDATING_WEBHOOK_CONFIG)
        .await
        .map_err(read(names::VALIDATING_WEBHOOK_CONFIG))?;
    let bundles = mutating
        .webhooks
        .into_iter()
        .flatten()
        .map(|w| w.client_config.ca_bundle)
        .chain(
            validating
                .webhooks
                .into_iter()
                .flatten()
                .map(|w| w.client_config.ca_bundle),
        )
        .flatten()
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    Ok(bundles.collect::<Vec<_>>().join("\n"))
}

/// The caBundle apply for one configuration of kind `K`.
async fn apply_one<K>(
    client: &kube::Client,
    name: &'static str,
    webhook: &str,
    ca_pem: &str,
) -> Result<(), ConfigurationError>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let pp = PatchParams::apply(names::CA_BUNDLE_FIELD_MANAGER).force();
    let patch = ca_bundle_patch(&K::kind(&()), name, webhook, ca_pem);
    Api::<K>::all(client.clone())
        .patch(name, &pp, &Patch::Apply(patch))
        .await
        .map(drop)
        .map_err(|source| ConfigurationError::Apply { name, source })
}

#[cfg(test)]
mod tests;
