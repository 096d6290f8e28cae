//! AdmissionReview in, AdmissionReview out: parsing with clear errors, dispatch to the pure
//! mutate/validate functions, and the response shape kubectl turns into field errors.

pub mod authz;
pub mod mutate;
pub mod scope;
pub mod tenancy;
pub mod validate;
pub mod validate_pool;
pub mod verdict;

#[cfg(test)]
mod handler_tests;

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{StatusCause, StatusDetails};
use kube::core::{DynamicObject, Status};
use serde_json::Value;
use tracing::Instrument;

use crate::admission::authz::{Access, SecretAccess};
use crate::admission::mutate::{MutateConfig, defaults_patch};
use crate::admission::tenancy::{SecretAccessFact, TemplateFact, TenancyFacts};
use crate::admission::validate::{ValidateConfig, ValidationInput, Verdict};
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;

const API_VERSION: &str = "admission.k8s.io/v1";
const GROUP: &str = "cyberdesk.io";
const KIND: &str = "Cyberdesk";
/// Reviewed by the validating webhook only: a pool has nothing to default.
const POOL_KIND: &str = "CyberdeskPool";
/// Longest message echoed back; hostile input must not become a huge response.
const MAX_ECHO: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Mutate,
    Validate,
}

impl Webhook {
    pub fn label(self) -> &'static str {
        match self {
            Webhook::Mutate => "mutate",
            Webhook::Validate => "validate",
        }
    }
}

/// A body that is not an AdmissionReview we can answer: the server replies 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadReview(pub String);

/// Everything the handlers need, shared by all requests.
#[derive(Clone)]
pub struct Admission {
    pub mutate: MutateConfig,
    pub validate: ValidateConfig,
    /// Where desks may be and how much metadata they may carry (`admission::scope`).
    pub scope: scope::ScopeConfig,
    pub policies: PolicyStore,
    pub metrics: Metrics,
    /// Which templates exist and where they may be used.
    pub templates: Catalog,
    /// Whether a requester may read the Secret their desk names.
    pub secret_access: Arc<dyn SecretAccess>,
    /// The operator's own user name (its ServiceAccount): its updates are bookkeeping.
    pub operator_username: String,
}

fn truncate(s: &str) -> String {
    crate::text::truncate(s, MAX_ECHO)
}

fn operation_label(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Parses and checks the envelope; anything short of a usable request is a `BadReview`,
/// except a request whose uid we can read, which gets a denied review carrying it.
fn parse(
    body: &[u8],
) -> Result<Result<AdmissionRequest<DynamicObject>, AdmissionResponse>, BadReview> {
    if body.is_empty() {
        return Err(BadReview(
            "empty body: expected an admission.k8s.io/v1 AdmissionReview".into(),
        ));
    }
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("body is not JSON: {}", truncate(&e.to_string()))))?;
    let api_version = raw.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = raw.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != API_VERSION || kind != "AdmissionReview" {
        return Err(BadReview(format!(
            "only {API_VERSION} AdmissionReview is supported, got apiVersion {:?} kind {:?}",
            truncate(api_version),
            truncate(kind)
        )));
    }
    let Some(request) = raw.get("request").filter(|r| r.is_object()) else {
        return Err(BadReview("AdmissionReview has no request".into()));
    };
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    match serde_json::from_value::<AdmissionReview<DynamicObject>>(raw) {
        Ok(review) => match review.try_into() {
            Ok(req) => Ok(Ok(req)),
            Err(_) => Err(BadReview("AdmissionReview has no request".into())),
        },
        Err(e) => match uid {
            Some(uid) if !uid.is_empty() => {
                let mut resp = AdmissionResponse::invalid(format!(
                    "malformed AdmissionReview request: {}",
                    truncate(&e.to_string())
                ));
                resp.uid = uid;
                Ok(Err(resp))
            }
            _ => Err(BadReview(format!(
                "malformed AdmissionReview: {}",
                truncate(&e.to_string())
            ))),
        },
    }
}

impl Admission {
    /// Answers one review. `Err` means HTTP 400 with the message.
    pub async fn review(
        &self,
        webhook: Webhook,
        body: &[u8],
    ) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let start = Instant::now();
        let result = match parse(body) {
            Err(bad) => Err(bad),
            Ok(Ok(req)) => {
                let span = tracing::info_span!(
                    "admission",
                    webhook = webhook.label(),
                    uid = %req.uid,
                    kind = %req.kind.kind,
                    namespace = req.namespace.as_deref().unwrap_or(""),
                    name = %req.name,
                    operation = operation_label(&req.operation),
                    dry_run = req.dry_run,
                );
                let op = operation_label(&req.operation);
                let resp = self.answer(webhook, &req).instrument(span.clone()).await;
                let verdict = if resp.allowed { "true" } else { "false" };
                span.in_scope(|| tracing::info!(allowed = resp.allowed, message = %resp.result.message, "admission answered"));
                self.metrics
                    .admission_requests
                    .with_label_values(&[webhook.label(), op, verdict])
                    .inc();
                Ok(resp.into_review())
            }
            Ok(Err(resp)) => {
                self.metrics
                    .admission_requests
                    .with_label_values(&[webhook.label(), "CREATE", "error"])
                    .inc();
                tracing::warn!(webhook = webhook.label(), uid = %resp.uid, message = %resp.result.message, "malformed admission request");
                Ok(resp.into_review())
            }
        };
        if let Err(e) = &result {
            tracing::warn!(webhook = webhook.label(), error = %e, "rejected admission body");
        }
        self.metrics
            .admission_duration
            .with_label_values(&[webhook.label()])
            .observe(start.elapsed().as_secs_f64());
        result
    }

    async fn answer(
        &self,
        webhook: Webhook,
        req: &AdmissionRequest<DynamicObject>,
    ) -> AdmissionResponse {
        let resp = AdmissionResponse::from(req);
        let pool = webhook == Webhook::Validate && req.kind.kind == POOL_KIND;
        if req.kind.group != GROUP || (req.kind.kind != KIND && !pool) {
            return resp.deny(format!(
                "this webhook admits only {GROUP} {KIND}{}, not {}/{}",
                if webhook == Webhook::Validate {
                    " and CyberdeskPool"
                } else {
                    ""
                },
                truncate(&req.kind.group),
                truncate(&req.kind.kind)
            ));
        }
        let object = match req.object.as_ref().map(serde_json::to_value) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => return resp.deny(format!("cannot read the object: {e}")),
            None => None,
        };
        match (webhook, &req.operation) {
            (Webhook::Mutate, Operation::Create) => {
                let Some(object) = object else {
                    return resp.deny("CREATE review without an object");
                };
                let patch = defaults_patch(&object, &self.mutate);
                if patch.0.is_empty() {
                    return resp;
                }
                match resp.clone().with_patch(patch) {
                    Ok(r) => r,
                    Err(e) => resp.deny(format!("cannot encode the defaults patch: {e}")),
                }
            }
            (Webhook::Validate, Operation::Create | Operation::Update) => {
                let Some(object) = object else {
                    return resp.deny("review without an object");
                };
                let old = match req.old_object.as_ref().map(serde_json::to_value) {
                    Some(Ok(v)) => Some(v),
                    _ => None,
                };
                self.validate(req, resp, &object, old.as_ref()).await
            }
            // Nothing to default on UPDATE/DELETE, nothing to validate on DELETE/CONNECT.
            _ => resp,
        }
    }

    async fn validate(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        resp: AdmissionResponse,
        object: &Value,
        old: Option<&Value>,
    ) -> AdmissionResponse {
        let operation = match req.operation {
            Operation::Update => validate::Operation::Update,
            _ => validate::Operation::Create,
        };
        let reviewed = if req.kind.kind == POOL_KIND {
            POOL
        } else {
            DESK
        };
        let mut limits = Verdict::default();
        let ns = req.namespace.as_deref().unwrap_or("");
        scope::judge(&self.scope, ns, operation, object, old, &mut limits);
        if !limits.allowed() {
            return respond(resp, reviewed, &req.name, limits);
        }
        let mut policies_only = false;
        if operation == validate::Operation::Update {
            // The operator's bookkeeping (finalizer, status) and anything on an object being
            // deleted must never be blocked by a rule or a policy added after admission.
            let being_deleted = object
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null());
            let by_operator = req.user_info.username.as_deref() == Some(&self.operator_username);
            if being_deleted || by_operator || old.is_some_and(|o| bookkeeping_only(o, object)) {
                return resp;
            }
            // A metadata change (a label removed) is judged by the policies, but not by the
            // spec rules, which judged this spec when it was written.
            policies_only = old.is_some_and(|o| o.get("spec") == object.get("spec"));
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(req.name.as_str());
        let namespace = req.namespace.as_deref().unwrap_or("");
        let policies = self.policies.current();
        let input = ValidationInput {
            operation,
            name,
            namespace,
            object,
            old_object: old,
        };
        let pool = req.kind.kind == POOL_KIND;
        if pool && policies_only {
            // The policies judge desks; a pool's metadata is its owner's business.
            return resp;
        }
        if policies_only {
            let outcome = policies.evaluate(namespace, operation, object);
            let verdict = Verdict {
                violations: outcome.violations,
                warnings: outcome.warnings,
            };
            return respond(resp, DESK, name, verdict);
        }
        let mut verdict = if pool {
            validate_pool::validate_pool(operation, name, object, old)
        } else {
            validate::validate(&input, &self.validate, &policies)
        };
        let facts = self.tenancy_facts(req, namespace, object, old).await;
        let user = req.user_info.username.as_deref().unwrap_or("");
        tenancy::judge(&facts, user, namespace, object, &mut verdict);
        respond(resp, if pool { POOL } else { DESK }, name, verdict)
    }

    /// Looks up what the tenant rules need: a SubjectAccessReview for a new or changed
    /// Secret reference, the template for a new or changed template (or reference).
    async fn tenancy_facts(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        namespace: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> TenancyFacts {
        let secret_access = match tenancy::secret_to_check(old, object) {
            None => None,
            Some(secret) => Some(
                match self
                    .secret_access
                    .may_get_secret(&req.user_info, namespace, secret)
                    .await
                {
                    Ok(Access::Allowed) => SecretAccessFact::Allowed,
                    Ok(Access::Denied(reason)) => SecretAccessFact::Denied(reason),
                    Err(e) => {
                        tracing::warn!(error = %e, secret, "SubjectAccessReview failed; denying");
                        SecretAccessFact::Unknown(format!("SubjectAccessReview failed: {e}"))
                    }
                },
            ),
        };
        let template = tenancy::template_to_check(old, object).map(|requested| {
            if !self.templates.is_synced() {
                return TemplateFact::NotLoaded;
            }
            match self.templates.resolve(requested, namespace) {
                Ok(t) => TemplateFact::Resolved(t),
                Err(refusal) => TemplateFact::Refused(refusal),
            }
        });
        TenancyFacts {
            secret_access,
            template,
        }
    }
}

/// Fields only the operator and the apiserver change; an UPDATE that differs in nothing
/// else is bookkeeping, never judged.
const BOOKKEEPING: [&str; 3] = ["finalizers", "managedFields", "resourceVersion"];

/// Does `new` differ from `old` only in bookkeeping fields and status?
pub fn bookkeeping_only(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(root) = v.as_object_mut() {
            root.remove("status");
            if let Some(Value::Object(meta)) = root.get_mut("metadata") {
                for key in BOOKKEEPING {
                    meta.remove(key);
                }
            }
        }
        v
    };
    strip(old) == strip(new)
}

/// The review as the AdmissionReview API defines it on the wire: `patch` is bytes, which
/// JSON carries as a base64 string. kube's serializer writes an array of numbers, which
/// the apiserver happens to accept and other consumers of the API do not.
pub fn review_json(mut review: AdmissionReview<DynamicObject>) -> serde_json::Result<Vec<u8>> {
    let Some(patch) = review.response.as_mut().and_then(|r| r.patch.take()) else {
        return serde_json::to_vec(&review);
    };
    // The rest of the review is small; the patch is encoded once, never as numbers.
    let mut value = serde_json::to_value(&review)?;
    value["response"]["patch"] = Value::String(B64.encode(patch));
    serde_json::to_vec(&value)
}

/// Turns a verdict into a response: 422 Invalid with one cause per violation (what kubectl
/// prints as field errors), and warnings either way.
/// The kind a review is about, as the denial names it: (kind, plural).
type Reviewed = (&'static str, &'static str);
const DESK: Reviewed = (KIND, "cyberdesks");
const POOL: Reviewed = (POOL_KIND, "cyberdeskpools");

fn respond(
    mut resp: AdmissionResponse,
    (kind, plural): Reviewed,
    name: &str,
    verdict: Verdict,
) -> AdmissionResponse {
    if !verdict.warnings.is_empty() {
        resp.warnings = Some(verdict.warnings);
    }
    if verdict.violations.is_empty() {
        return resp;
    }
    let summary: Vec<String> = verdict
        .violations
        .iter()
        .map(|v| {
            if v.field.is_empty() {
                v.message.clone()
            } else {
                format!("{}: {}", v.field, v.message)
            }
        })
        .collect();
    let message = format!(
        "{kind}.{GROUP} \"{}\" is invalid: {}",
        truncate(name),
        summary.join(", ")
    );
    let causes = verdict
        .violations
        .into_iter()
        .map(|v| StatusCause {
            reason: "FieldValueInvalid".into(),
            message: v.message,
            field: v.field,
        })
        .collect();
    resp.allowed = false;
    resp.result = Status::failure(&message, "Invalid")
        .with_code(422)
        .with_details(StatusDetails {
            name: truncate(name),
            group: GROUP.into(),
            kind: plural.into(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::validate::FieldViolation;

    #[test]
    fn respond_lists_every_cause() {
        let base = AdmissionResponse::invalid("x");
        let verdict = Verdict {
            violations: vec![
                FieldViolation {
                    field: "spec.timeoutMs".into(),
                    message: "too long".into(),
                },
                FieldViolation {
                    field: "metadata.name".into(),
                    message: "too long".into(),
                },
            ],
            warnings: vec!["careful".into()],
        };
        let resp = respond(base, DESK, "desk", verdict);
        assert!(!resp.allowed);
        assert_eq!(resp.result.code, 422);
        let details = resp.result.details.as_ref().expect("details");
        assert_eq!(details.causes.len(), 2);
        assert!(resp.result.message.contains("spec.timeoutMs: too long"));
        assert_eq!(resp.warnings, Some(vec!["careful".to_string()]));
    }

    #[test]
    fn envelope_errors_are_bad_reviews() {
        assert!(parse(b"").is_err());
        assert!(parse(b"not json").is_err());
        assert!(
            parse(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#)
                .is_err()
        );
        assert!(
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).is_err()
        );
        // A request we cannot read but whose uid we know: a denied review, not a 400.
        let denied = parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"EXPLODE"}}"#);
        match denied {
            Ok(Err(resp)) => {
                assert_eq!(resp.uid, "u1");
                assert!(!resp.allowed);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bookkeeping_is_finalizers_managed_fields_version_and_status() {
        let old = serde_json::json!({"metadata": {"name": "d", "labels": {"team": "a"}, "resourceVersion": "1",
            "finalizers": ["x"]}, "spec": {"timeoutMs": 1}, "status": {"phase": "Running"}});
        let mut new = old.clone();
        new["metadata"]["finalizers"] = serde_json::json!([]);
        new["metadata"]["resourceVersion"] = serde_json::json!("2");
        new["status"]["phase"] = serde_json::json!("Stopping");
        assert!(bookkeeping_only(&old, &new));
        new["metadata"]["labels"] = serde_json::json!({});
        assert!(!bookkeeping_only(&old, &new));
        let mut annotated = old.clone();
        annotated["metadata"]["annotations"] = serde_json::json!({"a": "b"});
        assert!(!bookkeeping_only(&old, &annotated));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(500);
        let t = truncate(&long);
        assert!(t.len() <= MAX_ECHO + 3);
    }
}
