//! JSON Schema policies (pure + a hot-swappable store).
//!
//! A policy is a JSON document:
//!
//! ```json
//! {"name": "max-timeout-7d", "description": "...",
//!  "match": {"namespaces": ["team-a"], "operations": ["CREATE", "UPDATE"]},
//!  "enforcement": "deny", "schema": { ...JSON Schema applied to the whole Cyberdesk... }}
//! ```
//!
//! Absent or empty `namespaces`/`operations`/`kinds` match everything; `enforcement`
//! defaults to `deny`. A policy judges desks and pools alike: a pool is judged as the pool
//! plus the desk fields its VMs stand for ([`pool_subject`]), so a ceiling on
//! `spec.timeoutMs` caps how long an unclaimed pool VM lives and a rule on `spec.template`
//! binds the pool's template; `match.kinds` narrows a policy to one of the two. Policies are compiled once at load; a set loads all-or-nothing so that a typo in
//! one file never silently drops a rule, and the caller keeps the last good set in force.
//! Schemas must be self-contained: a `$ref` to anything outside the document fails to
//! compile, and nothing is ever fetched.

mod files;
pub mod watch;

pub use files::{check_files, load_dir};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::Value;

use crate::text::{bounded_display, is_plain_key, truncate_chars};
use crate::verdict::{FieldViolation, Operation};

/// Findings reported per policy and object; a hostile object must not produce a huge answer.
pub const MAX_FINDINGS_PER_POLICY: usize = 20;
/// Longest schema error text kept in a message (the apiserver may truncate warnings at 256).
const MAX_MESSAGE_CHARS: usize = 200;
/// Longest field path kept (object keys are user input).
const MAX_FIELD_CHARS: usize = 256;
/// Longest policy name accepted (it shows up in every message the policy produces).
const MAX_NAME_CHARS: usize = 253;

/// Why a policy could not be loaded. Always names the policy — or, when its name is unknown,
/// the file or ConfigMap key it came from — so an operator can find and fix it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", subject(.name.as_deref(), .origin))]
pub struct PolicyError {
    /// Where the document came from: a file path or a ConfigMap key.
    pub origin: String,
    /// The policy's name, when the document got far enough to have one.
    pub name: Option<String>,
    pub reason: PolicyErrorReason,
}

fn subject(name: Option<&str>, origin: &str) -> String {
    match name {
        Some(name) => format!("policy {name:?} ({origin})"),
        None => format!("policy from {origin}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyErrorReason {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a valid policy document: {0}")]
    Shape(String),
    #[error("{0}")]
    Name(String),
    #[error("match.operations: {0}")]
    Operation(String),
    #[error("match.namespaces: {0}")]
    Namespace(String),
    #[error("match.kinds: {0}")]
    Kind(String),
    #[error("schema does not compile: {0}")]
    Schema(String),
    #[error("the name is already used by the policy from {0}; policy names must be unique")]
    Duplicate(String),
}

impl PolicyError {
    fn new(origin: &str, name: Option<&str>, reason: PolicyErrorReason) -> Self {
        PolicyError {
            origin: origin.to_string(),
            name: name.map(str::to_string),
            reason,
        }
    }
}

/// What a policy does with its findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Reject the request.
    #[default]
    Deny,
    /// Admit it, with a warning kubectl prints.
    Warn,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Deny => "deny",
            Enforcement::Warn => "warn",
        }
    }
}

/// The document as written; unknown keys are refused so that a misspelt `enforcment` cannot
/// quietly turn a warning into a denial (or the other way round).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "match")]
    matcher: Option<MatchDoc>,
    #[serde(default)]
    enforcement: Option<Enforcement>,
    schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchDoc {
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    #[serde(default)]
    operations: Option<Vec<String>>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
}

/// What a policy judges: a desk, or a pool (seen through [`pool_subject`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cyberdesk,
    CyberdeskPool,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cyberdesk => "Cyberdesk",
            Kind::CyberdeskPool => "CyberdeskPool",
        }
    }
}

/// The desk field a pool's `spec.maxIdleMs` stands for, and back: the longest a VM lives
/// before a desk has it.
const DESK_TIMEOUT: &str = "timeoutMs";
const POOL_MAX_IDLE: &str = "maxIdleMs";

/// The document the policies judge for a pool: the pool as it is, with the desk fields its
/// unclaimed VMs stand for added to `spec` — `timeoutMs`, the longest such a VM lives
/// (`maxIdleMs` or its default), and `timeoutAction: Delete`, what happens to it then.
/// `kind` stays `CyberdeskPool`, so a schema can still tell the two apart.
pub fn pool_subject(pool: &Value) -> Value {
    let mut subject = pool.clone();
    if let Some(Value::Object(spec)) = subject.get_mut("spec") {
        let idle = spec
            .get(POOL_MAX_IDLE)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| Value::from(crate::model::pool::DEFAULT_MAX_IDLE_MS));
        spec.insert(DESK_TIMEOUT.into(), idle);
        spec.insert("timeoutAction".into(), Value::from("Delete"));
    }
    subject
}

/// A finding on the pool's stand-in field is reported on the field the pool has.
fn pool_field(field: String) -> String {
    let desk = format!("spec.{DESK_TIMEOUT}");
    match field.strip_prefix(&desk) {
        Some(rest) if rest.is_empty() || rest.starts_with(['.', '[']) => {
            format!("spec.{POOL_MAX_IDLE}{rest}")
        }
        _ => field,
    }
}

/// Refuses every external resource: policies are loaded inside the admission path's
/// process and must never reach out to the network or the filesystem.
struct NoRemoteRefs;

impl jsonschema::Retrieve for NoRemoteRefs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "remote $ref {:?} is not allowed: policies must be self-contained (put shared parts under $defs)",
            uri.as_str()
        )
        .into())
    }
}

/// One compiled policy.
pub struct Policy {
    name: String,
    description: String,
    origin: String,
    /// Empty: every namespace.
    namespaces: BTreeSet<String>,
    /// Empty: CREATE and UPDATE.
    operations: Vec<Operation>,
    /// Empty: desks and pools.
    kinds: Vec<Kind>,
    enforcement: Enforcement,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("namespaces", &self.namespaces)
            .field("operations", &self.operations)
            .field("kinds", &self.kinds)
            .field("enforcement", &self.enforcement)
            .finish_non_exhaustive()
    }
}

/// One schema finding, before the policy's enforcement decides where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// kubectl-style path (`spec.timeoutMs`); empty for the object itself.
    pub field: String,
    /// The schema error text (cut short), without the policy's name.
    pub detail: String,
}

impl Policy {
    /// Parses and compiles one policy document.
    pub fn compile(origin: &str, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            PolicyError::new(origin, None, PolicyErrorReason::NotJson(e.to_string()))
        })?;
        // Read the name before the strict parse, so that later errors can name the policy.
        let known_name = raw
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty() && n.chars().count() <= MAX_NAME_CHARS)
            .map(str::to_string);
        let fail = |reason| PolicyError::new(origin, known_name.as_deref(), reason);

        if !raw.is_object() {
            return Err(fail(PolicyErrorReason::Shape(format!(
                "expected a JSON object with name and schema, got {}",
                type_name(&raw)
            ))));
        }
        match raw.get("name") {
            None | Some(Value::Null) => {
                return Err(fail(PolicyErrorReason::Name(
                    "has no name; every policy needs a non-empty \"name\"".into(),
                )));
            }
            Some(Value::String(n)) if n.trim().is_empty() => {
                return Err(fail(PolicyErrorReason::Name(
                    "the name is empty; every policy needs a non-empty \"name\"".into(),
                )));
            }
            Some(Value::String(n)) if n.chars().count() > MAX_NAME_CHARS => {
                return Err(fail(PolicyErrorReason::Name(format!(
                    "the name is {} characters long; at most {MAX_NAME_CHARS} are allowed",
                    n.chars().count()
                ))));
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(fail(PolicyErrorReason::Name(format!(
                    "\"name\" must be a string, got {}",
                    type_name(other)
                ))));
            }
        }
        let doc: PolicyDoc = serde_json::from_value(raw)
            .map_err(|e| fail(PolicyErrorReason::Shape(e.to_string())))?;

        let matcher = doc.matcher.unwrap_or(MatchDoc {
            namespaces: None,
            operations: None,
            kinds: None,
        });
        let mut kinds = Vec::new();
        for kind in matcher.kinds.unwrap_or_default() {
            let parsed = match kind.as_str() {
                "Cyberdesk" => Kind::Cyberdesk,
                "CyberdeskPool" => Kind::CyberdeskPool,
                _ => {
                    return Err(fail(PolicyErrorReason::Kind(format!(
                        "unknown kind {:?}; policies apply to \"Cyberdesk\" and/or \"CyberdeskPool\"",
                        truncate_chars(&kind, 40)
                    ))));
                }
            };
            if !kinds.contains(&parsed) {
                kinds.push(parsed);
            }
        }
        let mut operations = Vec::new();
        for op in matcher.operations.unwrap_or_default() {
            let parsed = match op.as_str() {
                "CREATE" => Operation::Create,
                "UPDATE" => Operation::Update,
                _ => {
                    return Err(fail(PolicyErrorReason::Operation(format!(
                        "unknown operation {:?}; policies apply to \"CREATE\" and/or \"UPDATE\"",
                        truncate_chars(&op, 40)
                    ))));
                }
            };
            if !operations.contains(&parsed) {
                operations.push(parsed);
            }
        }
        let mut namespaces = BTreeSet::new();
        for ns in matcher.namespaces.unwrap_or_default() {
            if ns.is_empty() {
                return Err(fail(PolicyErrorReason::Namespace(
                    "contains an empty namespace name; leave the list empty to match every namespace".into(),
                )));
            }
            namespaces.insert(ns);
        }

        let validator = jsonschema::options()
            .with_retriever(NoRemoteRefs)
            .build(&doc.schema)
            .map_err(|e| fail(PolicyErrorReason::Schema(bounded_display(&e, 400))))?;

        Ok(Policy {
            name: doc.name,
            description: doc.description.unwrap_or_default(),
            origin: origin.to_string(),
            namespaces,
            operations,
            kinds,
            enforcement: doc.enforcement.unwrap_or_default(),
            validator,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The file path or ConfigMap key the policy was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// Whether this policy looks at a request in `namespace` doing `operation`.
    pub fn applies_to(&self, namespace: &str, operation: Operation) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(namespace))
            && (self.operations.is_empty() || self.operations.contains(&operation))
    }

    /// Whether this policy judges objects of `kind`.
    pub fn judges(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// Every schema error for `object`, at most [`MAX_FINDINGS_PER_POLICY`] of them (plus
    /// one line saying more were cut).
    pub fn check(&self, object: &Value) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (i, error) in self.validator.iter_errors(object).enumerate() {
            if i == MAX_FINDINGS_PER_POLICY {
                findings.push(Finding {
                    field: String::new(),
                    detail: format!(
                        "more than {MAX_FINDINGS_PER_POLICY} findings; only the first {MAX_FINDINGS_PER_POLICY} are shown"
                    ),
                });
                break;
            }
            findings.push(Finding {
                field: field_path(error.instance_path().as_str(), object),
                detail: bounded_display(&error, MAX_MESSAGE_CHARS),
            });
        }
        findings
    }

    /// A finding as a field error: `policy "<name>": <detail>` on its field.
    pub fn violation(&self, finding: Finding) -> FieldViolation {
        FieldViolation {
            field: finding.field,
            message: format!("policy {:?}: {}", self.name, finding.detail),
        }
    }

    /// A finding as one warning sentence: `policy "<name>": spec.timeoutMs: <detail>` — the
    /// field is spelled out because warnings have no field of their own.
    pub fn warning(&self, finding: &Finding) -> String {
        if finding.field.is_empty() {
            format!("policy {:?}: {}", self.name, finding.detail)
        } else {
            format!(
                "policy {:?}: {}: {}",
                self.name, finding.field, finding.detail
            )
        }
    }

    /// One line for `policy check`.
    pub fn summary(&self) -> String {
        let operations = if self.operations.is_empty() {
            "CREATE, UPDATE".to_string()
        } else {
            self.operations
                .iter()
                .map(|op| op_label(*op))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kinds = if self.kinds.is_empty() {
            "Cyberdesk, CyberdeskPool".to_string()
        } else {
            self.kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let namespaces = if self.namespaces.is_empty() {
            "all namespaces".to_string()
        } else {
            self.namespaces
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}: policy {:?} ok (enforcement {}; operations {operations}; kinds {kinds}; namespaces {namespaces})",
            self.origin,
            self.name,
            self.enforcement.as_str()
        )
    }
}

fn op_label(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
    }
}

/// What the matching policies found in one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Findings of `deny` policies.
    pub violations: Vec<FieldViolation>,
    /// Findings of `warn` policies, one sentence each.
    pub warnings: Vec<String>,
}

/// A compiled, immutable set of policies.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

impl PolicySet {
    /// Compiles every source (origin, bytes). All-or-nothing: any broken policy, or two
    /// policies with the same name, fails the whole set and every problem is reported.
    pub fn load(sources: &[(String, Vec<u8>)]) -> Result<PolicySet, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut policies: Vec<Policy> = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (origin, bytes) in sources {
            match Policy::compile(origin, bytes) {
                Ok(policy) => {
                    if let Some(first) = seen.get(&policy.name) {
                        errors.push(PolicyError::new(
                            origin,
                            Some(&policy.name),
                            PolicyErrorReason::Duplicate(first.clone()),
                        ));
                        continue;
                    }
                    seen.insert(policy.name.clone(), origin.clone());
                    policies.push(policy);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(PolicySet { policies })
        } else {
            Err(errors)
        }
    }

    /// Runs every policy that matches `namespace` and `operation` against the desk `object`.
    pub fn evaluate(&self, namespace: &str, operation: Operation, object: &Value) -> PolicyOutcome {
        self.judge(Kind::Cyberdesk, namespace, operation, object, |f| f)
    }

    /// Runs every policy that matches `namespace` and `operation` against the pool `pool`,
    /// seen as [`pool_subject`]; findings on its stand-in `spec.timeoutMs` are reported on
    /// `spec.maxIdleMs`.
    pub fn evaluate_pool(
        &self,
        namespace: &str,
        operation: Operation,
        pool: &Value,
    ) -> PolicyOutcome {
        let subject = pool_subject(pool);
        self.judge(
            Kind::CyberdeskPool,
            namespace,
            operation,
            &subject,
            pool_field,
        )
    }

    fn judge(
        &self,
        kind: Kind,
        namespace: &str,
        operation: Operation,
        object: &Value,
        field: impl Fn(String) -> String,
    ) -> PolicyOutcome {
        let mut outcome = PolicyOutcome::default();
        for policy in self
            .policies
            .iter()
            .filter(|p| p.judges(kind) && p.applies_to(namespace, operation))
        {
            for mut finding in policy.check(object) {
                finding.field = field(finding.field);
                match policy.enforcement {
                    Enforcement::Deny => outcome.violations.push(policy.violation(finding)),
                    Enforcement::Warn => outcome.warnings.push(policy.warning(&finding)),
                }
            }
        }
        outcome
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Policy names in load order.
    pub fn names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
}

/// The policies in force, swapped whole on reload. Readers take an `Arc` snapshot, so a
/// request is judged by one consistent set even while a reload happens.
#[derive(Clone, Debug, Default)]
pub struct PolicyStore {
    inner: Arc<RwLock<Arc<PolicySet>>>,
}

impl PolicyStore {
    pub fn new(set: PolicySet) -> Self {
        PolicyStore {
            inner: Arc::new(RwLock::new(Arc::new(set))),
        }
    }

    pub fn current(&self) -> Arc<PolicySet> {
        // Poisoning cannot leave a half-written Arc behind, so the value is still good.
        let guard = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&guard)
    }

    /// Puts `set` in force. Call only with a set that loaded: a failed load keeps the last
    /// good set.
    pub fn replace(&self, set: PolicySet) {
        let mut guard = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Arc::new(set);
    }
}

/// Turns a JSON pointer into the path kubectl prints: `/spec/timeoutMs` → `spec.timeoutMs`,
/// array positions as `[0]`, keys that are not plain identifiers as `[app.kubernetes.io/x]`.
/// The object itself is the empty string (admission prints such causes without a field).
/// Whether a numeric segment is an index is decided by walking `instance`, because a
/// pointer alone cannot tell `/items/0` from a key named "0".
pub fn field_path(pointer: &str, instance: &Value) -> String {
    let mut out = String::new();
    let mut current = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        let index = match current {
            Some(Value::Array(_)) => segment.parse::<usize>().ok(),
            _ => None,
        };
        match (index, current) {
            (Some(index), Some(Value::Array(items))) => {
                let _ = write!(out, "[{index}]");
                current = items.get(index);
            }
            _ => {
                if is_plain_key(&segment) {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&segment);
                } else {
                    let _ = write!(out, "[{segment}]");
                }
                current = current.and_then(|v| v.get(segment.as_str()));
            }
        }
        if out.len() > MAX_FIELD_CHARS {
            return truncate_chars(&out, MAX_FIELD_CHARS);
        }
    }
    out
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use serde_json::json;

    fn policy_bytes(doc: Value) -> Vec<u8> {
        serde_json::to_vec(&doc).expect("serializes")
    }

    fn source(origin: &str, doc: Value) -> (String, Vec<u8>) {
        (origin.to_string(), policy_bytes(doc))
    }

    fn ceiling(name: &str, max: i64) -> Value {
        json!({
            "name": name,
            "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": max}}}}}
        })
    }

    fn desk(timeout: i64) -> Value {
        json!({"metadata": {"name": "alice"}, "spec": {"timeoutMs": timeout}})
    }

    fn manifest_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn only_error(result: Result<PolicySet, Vec<PolicyError>>) -> PolicyError {
        let mut errors = result.expect_err("load must fail");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.remove(0)
    }

    #[test]
    fn shipped_policies_load() {
        let sources = load_dir(&manifest_dir().join("policies")).expect("reads policies/");
        assert!(!sources.is_empty(), "policies/ holds the default policies");
        let set = match PolicySet::load(&sources) {
            Ok(set) => set,
            Err(errors) => panic!("shipped policies must load: {errors:#?}"),
        };
        assert_eq!(set.len(), sources.len());
        assert!(set.names().contains(&"max-timeout-7d"), "{:?}", set.names());
    }

    #[test]
    fn shipped_policies_match_the_configmap_copies() {
        let top = load_dir(&manifest_dir().join("policies")).expect("reads policies/");
        let packed = load_dir(&manifest_dir().join("manifests/base/policies"))
            .expect("reads manifests/base/policies/");
        let names = |v: &[(String, Vec<u8>)]| -> Vec<String> {
            v.iter()
                .map(|(p, _)| {
                    Path::new(p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect()
        };
        assert_eq!(
            names(&top),
            names(&packed),
            "same files in policies/ and manifests/base/policies/"
        );
        for ((a, bytes_a), (b, bytes_b)) in top.iter().zip(&packed) {
            assert!(
                bytes_a == bytes_b,
                "{a} and {b} differ; copy policies/ into manifests/base/policies/"
            );
        }
    }

    #[test]
    fn shipped_ceiling_denies_over_seven_days() {
        let set = PolicySet::load(&load_dir(&manifest_dir().join("policies")).expect("reads"))
            .expect("loads");
        let over = set.evaluate("default", Operation::Create, &desk(604_800_001));
        let denied: Vec<_> = over
            .violations
            .iter()
            .filter(|v| v.message.contains("max-timeout-7d"))
            .collect();
        assert_eq!(denied.len(), 1, "{over:?}");
        assert_eq!(denied[0].field, "spec.timeoutMs");
        assert!(
            denied[0].message.starts_with("policy \"max-timeout-7d\": "),
            "{}",
            denied[0].message
        );
        assert!(
            denied[0].message.contains("604800001"),
            "{}",
            denied[0].message
        );

        let at = set.evaluate("default", Operation::Update, &desk(604_800_000));
        assert!(at.violations.is_empty(), "{at:?}");
    }

    #[test]
    fn ceiling_policy_boundaries() {
        let set = PolicySet::load(&[source("p.json", ceiling("max-timeout-7d", 604_800_000))])
            .expect("loads");
        let out = set.evaluate("ns", Operation::Create, &desk(604_800_001));
        assert_eq!(out.violations.len(), 1);
        assert_eq!(out.violations[0].field, "spec.timeoutMs");
        assert!(out.warnings.is_empty());
        assert!(
            set.evaluate("ns", Operation::Create, &desk(604_800_000))
                .violations
                .is_empty()
        );
        assert!(
            set.evaluate("ns", Operation::Create, &desk(1_000))
                .violations
                .is_empty()
        );
    }

    #[test]
    fn namespaces_and_operations_match() {
        let mut doc = ceiling("team-a-only", 10);
        doc["match"] = json!({"namespaces": ["team-a", "team-b"], "operations": ["UPDATE"]});
        let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
        let object = desk(11);
        assert_eq!(
            set.evaluate("team-a", Operation::Update, &object)
                .violations
                .len(),
            1
        );
        assert_eq!(
            set.evaluate("team-b", Operation::Update, &object)
                .violations
                .len(),
            1
        );
        assert!(
            set.evaluate("team-a", Operation::Create, &object)
                .violations
                .is_empty()
        );
        assert!(
            set.evaluate("team-c", Operation::Update, &object)
                .violations
                .is_empty()
        );
        assert!(
            set.evaluate("", Operation::Update, &object)
                .violations
                .is_empty()
        );

        // Empty lists and an absent or null match mean everything.
        for matcher in [
            json!({"namespaces": [], "operations": []}),
            json!(null),
            json!({}),
        ] {
            let mut doc = ceiling("all", 10);
            doc["match"] = matcher.clone();
            let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
            for op in [Operation::Create, Operation::Update] {
                assert_eq!(
                    set.evaluate("anything", op, &object).violations.len(),
                    1,
                    "{matcher}"
                );
            }
        }
    }

    #[test]
    fn warn_policies_warn_instead_of_deny() {
        let mut doc = ceiling("long-session", 28_800_000);
        doc["enforcement"] = json!("warn");
        let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
        let out = set.evaluate("ns", Operation::Create, &desk(28_800_001));
        assert!(out.violations.is_empty());
        assert_eq!(out.warnings.len(), 1);
        let warning = &out.warnings[0];
        assert!(
            warning.starts_with("policy \"long-session\": spec.timeoutMs: "),
            "{warning}"
        );
        assert!(warning.contains("28800001"), "{warning}");
        assert!(
            set.evaluate("ns", Operation::Create, &desk(28_800_000))
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn enforcement_defaults_to_deny_and_is_strict() {
        let set = PolicySet::load(&[source("p.json", ceiling("c", 1))]).expect("loads");
        assert_eq!(set.policies()[0].enforcement(), Enforcement::Deny);

        let mut doc = ceiling("c", 1);
        doc["enforcement"] = json!("Warn");
        let err = only_error(PolicySet::load(&[source("p.json", doc)]));
        assert!(
            err.to_string()
                .starts_with("policy \"c\" (p.json): not a valid policy document"),
            "{err}"
        );
    }

    #[test]
    fn broken_json_names_the_file() {
        let err = only_error(PolicySet::load(&[(
            "policies/bad.json".into(),
            b"{\"name\": ".to_vec(),
        )]));
        assert!(err.name.is_none());
        let text = err.to_string();
        assert!(
            text.starts_with("policy from policies/bad.json: not valid JSON"),
            "{text}"
        );
    }

    #[test]
    fn missing_or_empty_name_is_refused() {
        for doc in [
            json!({"schema": true}),
            json!({"name": null, "schema": true}),
            json!({"name": "  ", "schema": true}),
            json!({"name": 7, "schema": true}),
            json!({"name": "x".repeat(300), "schema": true}),
        ] {
            let err = only_error(PolicySet::load(&[source("cm:nameless.json", doc.clone())]));
            let text = err.to_string();
            assert!(
                text.starts_with("policy from cm:nameless.json: "),
                "{doc}: {text}"
            );
            assert!(text.contains("name"), "{text}");
            assert!(text.len() < 300, "the long name is not echoed: {text}");
        }
    }

    #[test]
    fn document_shape_errors_name_the_policy() {
        let cases = [
            (
                json!([1, 2]),
                "policy from p.json: not a valid policy document",
            ),
            (
                json!({"name": "n"}),
                "policy \"n\" (p.json): not a valid policy document: missing field `schema`",
            ),
            (
                json!({"name": "n", "schema": true, "enforcment": "warn"}),
                "unknown field `enforcment`",
            ),
            (
                json!({"name": "n", "schema": true, "match": {"namespace": ["a"]}}),
                "unknown field `namespace`",
            ),
            (
                json!({"name": "n", "schema": true, "match": {"operations": ["DELETE"]}}),
                "match.operations: unknown operation \"DELETE\"",
            ),
            (
                json!({"name": "n", "schema": true, "match": {"operations": "CREATE"}}),
                "not a valid policy document",
            ),
            (
                json!({"name": "n", "schema": true, "match": {"namespaces": [""]}}),
                "match.namespaces: contains an empty",
            ),
            (
                json!({"name": "n", "schema": true, "description": 5}),
                "not a valid policy document",
            ),
        ];
        for (doc, expected) in cases {
            let err = only_error(PolicySet::load(&[source("p.json", doc.clone())]));
            let text = err.to_string();
            assert!(text.contains(expected), "{doc}: {text}");
        }
    }

    #[test]
    fn schema_that_does_not_compile_is_refused() {
        for schema in [
            json!({"type": 5}),
            json!({"maximum": "ten"}),
            json!({"pattern": "(unclosed"}),
            json!(null),
        ] {
            let err = only_error(PolicySet::load(&[source(
                "policies/max-timeout.json",
                json!({"name": "max-timeout-7d", "schema": schema.clone()}),
            )]));
            let text = err.to_string();
            assert!(
                text.starts_with("policy \"max-timeout-7d\" (policies/max-timeout.json): schema does not compile: "),
                "{schema}: {text}"
            );
            assert!(matches!(err.reason, PolicyErrorReason::Schema(_)));
        }
    }

    #[test]
    fn remote_refs_are_refused_not_fetched() {
        for reference in [
            "https://example.invalid/schema.json",
            "http://127.0.0.1:9/schema.json",
            "file:///etc/passwd",
            "other.json#/$defs/x",
        ] {
            let doc = json!({"name": "remote", "schema": {"$ref": reference}});
            let err = only_error(PolicySet::load(&[source("p.json", doc)]));
            let text = err.to_string();
            assert!(
                text.starts_with("policy \"remote\" (p.json): schema does not compile: "),
                "{text}"
            );
            assert!(
                matches!(err.reason, PolicyErrorReason::Schema(_)),
                "{reference}"
            );
        }
        // The refusal explains itself for an absolute URL.
        let doc = json!({"name": "remote", "schema": {"$ref": "https://example.invalid/s.json"}});
        let err = only_error(PolicySet::load(&[source("p.json", doc)]));
        assert!(err.to_string().contains("not allowed"), "{err}");

        // Local references work.
        let doc = json!({
            "name": "local",
            "schema": {"$defs": {"t": {"maximum": 5}}, "properties": {"spec": {"properties": {"timeoutMs": {"$ref": "#/$defs/t"}}}}}
        });
        let set = PolicySet::load(&[source("p.json", doc)]).expect("local $ref compiles");
        assert_eq!(
            set.evaluate("ns", Operation::Create, &desk(6))
                .violations
                .len(),
            1
        );
    }

    #[test]
    fn duplicate_names_are_refused_with_both_origins() {
        let err = only_error(PolicySet::load(&[
            source("a.json", ceiling("same", 1)),
            source("cm:b.json", ceiling("same", 2)),
        ]));
        let text = err.to_string();
        assert!(text.starts_with("policy \"same\" (cm:b.json): "), "{text}");
        assert!(text.contains("a.json"), "{text}");
    }

    #[test]
    fn every_broken_policy_is_reported_and_nothing_loads() {
        let result = PolicySet::load(&[
            source("good.json", ceiling("good", 1)),
            ("bad.json".into(), b"nope".to_vec()),
            source("nameless.json", json!({"schema": true})),
            source("dup.json", ceiling("good", 2)),
        ]);
        let errors = result.expect_err("fails");
        assert_eq!(errors.len(), 3, "{errors:?}");
        let origins: Vec<&str> = errors.iter().map(|e| e.origin.as_str()).collect();
        assert_eq!(origins, ["bad.json", "nameless.json", "dup.json"]);
    }

    #[test]
    fn empty_set_allows_everything() {
        let set = PolicySet::load(&[]).expect("loads");
        assert!(set.is_empty());
        assert_eq!(
            set.evaluate("ns", Operation::Create, &json!(null)),
            PolicyOutcome::default()
        );
    }

    #[test]
    fn field_paths_read_like_kubectl() {
        let object = json!({
            "spec": {"timeoutMs": 1, "list": [{"a": 1}, {"b": [5, 6]}], "0": {"x": 1}},
            "metadata": {"labels": {"app.kubernetes.io/name": "x", "a~b": 1}}
        });
        let cases = [
            ("", ""),
            ("/spec", "spec"),
            ("/spec/timeoutMs", "spec.timeoutMs"),
            ("/spec/list/0", "spec.list[0]"),
            ("/spec/list/1/b/1", "spec.list[1].b[1]"),
            ("/spec/0/x", "spec.0.x"),
            (
                "/metadata/labels/app.kubernetes.io~1name",
                "metadata.labels[app.kubernetes.io/name]",
            ),
            ("/metadata/labels/a~0b", "metadata.labels[a~b]"),
            ("/nope/3", "nope.3"),
        ];
        for (pointer, expected) in cases {
            assert_eq!(field_path(pointer, &object), expected, "{pointer}");
        }
        assert_eq!(field_path("/0/a", &json!([{"a": 1}])), "[0].a");
        assert!(
            field_path(&format!("/{}", "k".repeat(5000)), &json!({}))
                .chars()
                .count()
                <= MAX_FIELD_CHARS + 1
        );
    }

    #[test]
    fn findings_are_capped_and_short() {
        let doc = json!({
            "name": "strict",
            "schema": {"properties": {"spec": {"additionalProperties": {"type": "string"}}}}
        });
        let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
        let mut spec = serde_json::Map::new();
        for i in 0..500 {
            spec.insert(format!("k{i}"), json!(vec![i; 1000]));
        }
        let out = set.evaluate("ns", Operation::Create, &json!({"spec": spec}));
        assert_eq!(out.violations.len(), MAX_FINDINGS_PER_POLICY + 1);
        assert!(
            out.violations
                .last()
                .is_some_and(|v| v.message.contains("more than 20 findings"))
        );
        for v in &out.violations {
            assert!(v.message.chars().count() < 300, "{}", v.message);
        }
    }

    #[test]
    fn deep_and_huge_objects_do_not_panic() {
        let set = PolicySet::load(&load_dir(&manifest_dir().join("policies")).expect("reads"))
            .expect("loads");
        // As deep as serde_json lets a request body be.
        let mut deep = json!(1);
        for _ in 0..120 {
            deep = json!({"spec": [deep]});
        }
        assert_short(&set.evaluate("team-a", Operation::Create, &deep), &deep);
        let huge = json!({"spec": {"timeoutMs": "x".repeat(5_000_000), "template": "y".repeat(1_000_000)}});
        assert_short(
            &set.evaluate("team-a", Operation::Create, &huge),
            &json!("huge"),
        );
        for object in [
            json!(null),
            json!([]),
            json!("spec"),
            json!({"spec": null}),
            json!({"spec": {"timeoutMs": 1e308}}),
        ] {
            // Not a desk: whatever the policies say, each answer is a bounded message.
            assert_short(&set.evaluate("team-a", Operation::Update, &object), &object);
        }
    }

    /// Every violation and warning of `out` is a short message.
    fn assert_short(out: &PolicyOutcome, object: &Value) {
        let texts = out
            .violations
            .iter()
            .map(|v| &v.message)
            .chain(&out.warnings);
        for text in texts {
            assert!(text.len() < 1_000, "{object}: {} bytes", text.len());
        }
    }

    #[test]
    fn store_swaps_whole_sets() {
        let store = PolicyStore::default();
        assert!(store.current().is_empty());
        let before = store.current();
        let clone = store.clone();
        clone.replace(PolicySet::load(&[source("p.json", ceiling("c", 1))]).expect("loads"));
        assert_eq!(store.current().names(), ["c"]);
        assert!(before.is_empty(), "a snapshot taken earlier is unaffected");
    }

    #[test]
    fn store_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PolicyStore>();
        assert_send_sync::<PolicySet>();
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cyberdesk-policy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creates temp dir");
        dir
    }

    #[test]
    fn load_dir_reads_sorted_json_files_only() {
        let dir = temp_dir("load");
        std::fs::write(dir.join("b.json"), "{}").expect("write");
        std::fs::write(dir.join("a.json"), "[]").expect("write");
        std::fs::write(dir.join("notes.txt"), "x").expect("write");
        std::fs::write(dir.join(".hidden.json"), "x").expect("write");
        std::fs::create_dir_all(dir.join("sub.json")).expect("mkdir");
        let found = load_dir(&dir).expect("reads");
        let names: Vec<String> = found
            .iter()
            .map(|(p, _)| {
                Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["a.json", "b.json"]);
        assert_eq!(found[0].1, b"[]");
        assert!(
            load_dir(&dir.join("missing"))
                .expect("missing is fine")
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_files_reports_ok_lines_and_every_error() {
        let dir = temp_dir("check");
        let good = dir.join("good.json");
        let bad = dir.join("bad.json");
        std::fs::write(&good, policy_bytes(ceiling("good", 5))).expect("write");
        std::fs::write(&bad, br#"{"name": "bad", "schema": {"type": 1}}"#).expect("write");

        let lines = check_files(std::slice::from_ref(&good)).expect("good file checks");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("policy \"good\" ok"), "{}", lines[0]);
        assert!(lines[0].contains("enforcement deny"), "{}", lines[0]);

        let errors =
            check_files(&[good.clone(), bad.clone(), dir.join("absent.json")]).expect_err("fails");
        assert_eq!(errors.len(), 2, "{errors:?}");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("absent.json") && t.contains("cannot read it")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("policy \"bad\"") && t.contains("schema does not compile")),
            "{text:?}"
        );

        // A folder stands for its policies.
        std::fs::remove_file(&bad).expect("rm");
        assert_eq!(
            check_files(std::slice::from_ref(&dir))
                .expect("folder checks")
                .len(),
            1
        );
        let shipped =
            check_files(&[manifest_dir().join("policies")]).expect("shipped policies check");
        assert!(shipped.iter().any(|l| l.contains("max-timeout-7d")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn pool(spec: Value) -> Value {
        json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool",
               "metadata": {"name": "warm"}, "spec": spec})
    }

    #[test]
    fn shipped_policies_bind_pools_as_the_desks_they_serve() {
        let set = PolicySet::load(&load_dir(&manifest_dir().join("policies")).expect("reads"))
            .expect("loads");
        // An unclaimed VM may not outlive the desks' ceiling: the finding names maxIdleMs.
        let long = set.evaluate_pool(
            "default",
            Operation::Create,
            &pool(json!({"size": 1, "maxIdleMs": 604_800_001_i64})),
        );
        let fields: Vec<&str> = long.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["spec.maxIdleMs"], "{long:?}");
        assert!(long.violations[0].message.contains("max-timeout-7d"));
        assert!(
            long.warnings
                .iter()
                .any(|w| w.contains("spec.maxIdleMs") && w.contains("long-session-warning-8h")),
            "{long:?}"
        );
        // The default lifetime passes every shipped policy.
        let default = set.evaluate_pool("default", Operation::Create, &pool(json!({"size": 1})));
        assert_eq!(default, PolicyOutcome::default());
        // A namespace's template list binds its pools too.
        let gpu = set.evaluate_pool(
            "team-a",
            Operation::Create,
            &pool(json!({"size": 1, "template": "other"})),
        );
        assert_eq!(gpu.violations.len(), 1, "{gpu:?}");
        assert_eq!(gpu.violations[0].field, "spec.template");
        assert!(gpu.violations[0].message.contains("team-a-templates"));
    }

    #[test]
    fn match_kinds_narrows_a_policy() {
        let desks_only = json!({"name": "desks-only", "match": {"kinds": ["Cyberdesk"]},
            "schema": {"properties": {"spec": {"required": ["timeoutAction"]}}}});
        let pools_only = json!({"name": "pools-only", "match": {"kinds": ["CyberdeskPool"]},
            "schema": {"properties": {"spec": {"properties": {"size": {"maximum": 3}}}}}});
        let set =
            PolicySet::load(&[source("a", desks_only), source("b", pools_only)]).expect("loads");
        let p = pool(json!({"size": 5}));
        let pooled = set.evaluate_pool("ns", Operation::Create, &p);
        assert_eq!(pooled.violations.len(), 1, "{pooled:?}");
        assert!(pooled.violations[0].message.contains("pools-only"));
        let desk = set.evaluate("ns", Operation::Create, &json!({"spec": {"size": 5}}));
        assert_eq!(desk.violations.len(), 1, "{desk:?}");
        assert!(desk.violations[0].message.contains("desks-only"));
        let bad = only_error(PolicySet::load(&[source(
            "c",
            json!({"name": "c", "match": {"kinds": ["Pod"]}, "schema": {}}),
        )]));
        assert!(bad.to_string().contains("match.kinds"), "{bad}");
        assert!(bad.to_string().contains("\"Pod\""), "{bad}");
    }

    #[test]
    fn a_pool_is_judged_with_the_desk_fields_it_stands_for() {
        let subject = pool_subject(&pool(json!({"size": 1})));
        assert_eq!(
            subject["spec"]["timeoutMs"],
            json!(crate::model::pool::DEFAULT_MAX_IDLE_MS)
        );
        assert_eq!(subject["spec"]["timeoutAction"], "Delete");
        assert_eq!(subject["kind"], "CyberdeskPool");
        let set = pool_subject(&pool(json!({"size": 1, "maxIdleMs": 60000})));
        assert_eq!(set["spec"]["timeoutMs"], 60000);
        assert_eq!(pool_field("spec.timeoutMs".into()), "spec.maxIdleMs");
        assert_eq!(pool_field("spec.timeoutMsX".into()), "spec.timeoutMsX");
        assert_eq!(pool_field("spec.template".into()), "spec.template");
    }
}
