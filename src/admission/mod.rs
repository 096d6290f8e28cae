//! AdmissionReview in, AdmissionReview out: parsing with clear errors, dispatch to the pure
//! mutate/validate functions, and the response shape kubectl turns into field errors.

pub mod authz;
pub mod cost;
pub mod mutate;
pub mod scope;
pub mod tenancy;
pub mod validate;
pub mod validate_pool;

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::response::{StatusCause, StatusDetails};
use kube::core::{GroupVersionKind, Status};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use tracing::Instrument;

use crate::admission::authz::{Access, AccessError, SecretAccess};
use crate::admission::mutate::{MutateConfig, defaults_patch};
use crate::admission::tenancy::{SecretAccessFact, TemplateFact, TenancyFacts};
use crate::admission::validate::{ValidateConfig, ValidationInput};
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
use crate::verdict::{self, Verdict};

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
    /// Whether a requester may read the Secret their desk names, or use its pool.
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

/// One AdmissionReview request, with exactly the fields the webhooks read. Parsed once,
/// straight from the body: each object becomes a `Value` (the rules and policies read it as
/// JSON), everything else the apiserver sends is skipped without being kept.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<ReviewRequest>,
}

/// A response that admits, for the request with `uid`.
fn admit(uid: &str) -> AdmissionResponse {
    let mut resp = AdmissionResponse::invalid("");
    resp.uid = uid.to_string();
    resp.allowed = true;
    resp.result = Status::default();
    resp
}

fn envelope_problem(api_version: &str, kind: &str) -> Option<BadReview> {
    (api_version != API_VERSION || kind != "AdmissionReview").then(|| {
        BadReview(format!(
            "only {API_VERSION} AdmissionReview is supported, got apiVersion {:?} kind {:?}",
            truncate(api_version),
            truncate(kind)
        ))
    })
}

/// Parses and checks the envelope; anything short of a usable request is a `BadReview`,
/// except a request whose uid we can read, which gets a denied review carrying it.
fn parse(body: &[u8]) -> Result<Result<ReviewRequest, AdmissionResponse>, BadReview> {
    if body.is_empty() {
        return Err(BadReview(
            "empty body: expected an admission.k8s.io/v1 AdmissionReview".into(),
        ));
    }
    let problem = match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => {
            if let Some(bad) = envelope_problem(&envelope.api_version, &envelope.kind) {
                return Err(bad);
            }
            let Some(request) = envelope.request else {
                return Err(BadReview("AdmissionReview has no request".into()));
            };
            let not_object = |o: &Option<Value>| o.as_ref().is_some_and(|v| !v.is_object());
            if !(not_object(&request.object) || not_object(&request.old_object)) {
                return Ok(Ok(request));
            }
            let what = if not_object(&request.object) {
                "object"
            } else {
                "oldObject"
            };
            (Some(request.uid), format!("{what} is not a JSON object"))
        }
        // Only now look closer, without keeping anything but the uid, to say what is wrong.
        Err(e) => {
            let probe = serde_json::from_slice::<Probe>(body).map_err(|probe_error| {
                let what = match probe_error.classify() {
                    serde_json::error::Category::Data => "body is not an AdmissionReview",
                    _ => "body is not JSON",
                };
                BadReview(format!("{what}: {}", truncate(&probe_error.to_string())))
            })?;
            if let Some(bad) = envelope_problem(probe.api_version.as_str(), probe.kind.as_str()) {
                return Err(bad);
            }
            match probe.request {
                ProbedRequest::Object { uid } => (uid, e.to_string()),
                ProbedRequest::Absent | ProbedRequest::NotObject => {
                    return Err(BadReview("AdmissionReview has no request".into()));
                }
            }
        }
    };
    match problem {
        (Some(uid), error) if !uid.is_empty() => {
            let mut resp = AdmissionResponse::invalid(format!(
                "malformed AdmissionReview request: {}",
                truncate(&error)
            ));
            resp.uid = uid;
            Ok(Err(resp))
        }
        (_, error) => Err(BadReview(format!(
            "malformed AdmissionReview: {}",
            truncate(&error)
        ))),
    }
}

/// What a body that is not a usable review holds: its envelope and the request's uid, read
/// leniently (a field of the wrong type reads as absent) and keeping nothing else.
#[derive(Default, Deserialize)]
struct Probe {
    #[serde(rename = "apiVersion", default)]
    api_version: Text,
    #[serde(default)]
    kind: Text,
    #[serde(default)]
    request: ProbedRequest,
}

#[derive(Default)]
enum ProbedRequest {
    #[default]
    Absent,
    NotObject,
    Object {
        uid: Option<String>,
    },
}

/// A string, or nothing when the value is anything else.
#[derive(Default)]
struct Text(Option<String>);

impl Text {
    fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

/// The `Visitor` methods for every JSON value but strings and objects: each is `$otherwise`,
/// and an array is skipped without being kept.
macro_rules! otherwise {
    ($otherwise:expr) => {
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($otherwise)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($otherwise)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($otherwise)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($otherwise)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($otherwise)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($otherwise)
        }
    };
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            otherwise!(Text(None));
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(Some(s.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ProbedRequest {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProbedRequest;
            otherwise!(ProbedRequest::NotObject);
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ProbedRequest, E> {
                Ok(ProbedRequest::NotObject)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProbedRequest, A::Error> {
                let mut uid = None;
                while let Some(key) = map.next_key::<Text>()? {
                    if key.as_str() == "uid" {
                        uid = map.next_value::<Text>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ProbedRequest::Object { uid })
            }
        }
        d.deserialize_any(V)
    }
}

impl Admission {
    /// Answers one review. `Err` means HTTP 400 with the message.
    pub async fn review(
        &self,
        webhook: Webhook,
        body: &[u8],
    ) -> Result<AdmissionResponse, BadReview> {
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
                Ok(resp)
            }
            Ok(Err(resp)) => {
                self.metrics
                    .admission_requests
                    .with_label_values(&[webhook.label(), "CREATE", "error"])
                    .inc();
                tracing::warn!(webhook = webhook.label(), uid = %resp.uid, message = %resp.result.message, "malformed admission request");
                Ok(resp)
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

    async fn answer(&self, webhook: Webhook, req: &ReviewRequest) -> AdmissionResponse {
        let resp = admit(&req.uid);
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
        let object = req.object.as_ref();
        match (webhook, &req.operation) {
            (Webhook::Mutate, Operation::Create) => {
                let Some(object) = object else {
                    return resp.deny("CREATE review without an object");
                };
                let patch = defaults_patch(object, &self.mutate);
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
                self.validate(req, resp, object, req.old_object.as_ref())
                    .await
            }
            // Nothing to default on UPDATE/DELETE, nothing to validate on DELETE/CONNECT.
            _ => resp,
        }
    }

    async fn validate(
        &self,
        req: &ReviewRequest,
        resp: AdmissionResponse,
        object: &Value,
        old: Option<&Value>,
    ) -> AdmissionResponse {
        let operation = match req.operation {
            Operation::Update => verdict::Operation::Update,
            _ => verdict::Operation::Create,
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
        if operation == verdict::Operation::Update {
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
        if policies_only {
            let outcome = if pool {
                policies.evaluate_pool(namespace, operation, object)
            } else {
                policies.evaluate(namespace, operation, object)
            };
            let verdict = Verdict {
                violations: outcome.violations,
                warnings: outcome.warnings,
            };
            return respond(resp, if pool { POOL } else { DESK }, name, verdict);
        }
        let mut verdict = if pool {
            validate_pool::validate_pool(operation, name, namespace, object, old, &policies)
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
        req: &ReviewRequest,
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
                    Err(e @ AccessError::Throttled { .. }) => {
                        // Counted in the metric; one line per refused check would be a flood.
                        tracing::debug!(error = %e, secret, "SubjectAccessReview not asked; denying");
                        SecretAccessFact::Unknown(e.to_string())
                    }
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
        let pool_use = match tenancy::pool_to_check(old, object) {
            None => None,
            Some(pool) => Some(
                match self
                    .secret_access
                    .may_use_pool(&req.user_info, namespace, pool)
                    .await
                {
                    Ok(Access::Allowed) => SecretAccessFact::Allowed,
                    Ok(Access::Denied(reason)) => SecretAccessFact::Denied(reason),
                    Err(e) => {
                        tracing::warn!(error = %e, pool, "SubjectAccessReview failed; denying");
                        SecretAccessFact::Unknown(format!("SubjectAccessReview failed: {e}"))
                    }
                },
            ),
        };
        TenancyFacts {
            secret_access,
            template,
            pool_use,
        }
    }
}

/// Fields only the operator and the apiserver change; an UPDATE that differs in nothing
/// else is bookkeeping, never judged.
const BOOKKEEPING: [&str; 3] = ["finalizers", "managedFields", "resourceVersion"];

/// Does `new` differ from `old` only in bookkeeping fields and status? Compared in place:
/// an UPDATE review carries two objects, and copying them would double what it holds.
pub fn bookkeeping_only(old: &Value, new: &Value) -> bool {
    match (old.as_object(), new.as_object()) {
        (Some(old), Some(new)) => equal_except(old, new, &["status"], |key, a, b| {
            match (key, a.as_object(), b.as_object()) {
                ("metadata", Some(a), Some(b)) => {
                    equal_except(a, b, &BOOKKEEPING, |_, a, b| a == b)
                }
                _ => a == b,
            }
        }),
        _ => old == new,
    }
}

/// Are the two objects equal, leaving out the keys in `skip` and comparing the others' values
/// with `same`?
fn equal_except(
    a: &serde_json::Map<String, Value>,
    b: &serde_json::Map<String, Value>,
    skip: &[&str],
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let kept = |m: &serde_json::Map<String, Value>| {
        m.keys().filter(|k| !skip.contains(&k.as_str())).count()
    };
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| b.get(k).is_some_and(|w| same(k, v, w)))
}

/// The review as the AdmissionReview API defines it on the wire: always `admission.k8s.io/v1`
/// (the only version accepted), and `patch` as bytes, which JSON carries as a base64
/// string. kube's serializer writes an array of numbers, which the apiserver happens to
/// accept and other consumers of the API do not.
pub fn review_json(mut response: AdmissionResponse) -> serde_json::Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Review<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        kind: &'static str,
        response: &'a AdmissionResponse,
    }
    let patch = response.patch.take();
    let review = Review {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: &response,
    };
    let Some(patch) = patch else {
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
mod tests;
