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

pub mod files;
pub mod watch;

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
mod tests;
