//! Validation of CREATE and UPDATE (pure).
//!
//! Works on the raw JSON rather than the typed spec, so that every problem is reported in
//! one answer. Through the apiserver, wrong types and unknown fields never get here: the
//! CRD's structural schema rejects them first. The checks for them stay as a second line
//! for reviews that did not pass that schema (an older CRD, a direct call).

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::model::conditions::VM_CREATED;
use crate::policy::PolicySet;
use crate::text::{is_plain_key, truncate_chars};
use crate::verdict::{Operation, Verdict};

#[derive(Clone, Debug)]
pub struct ValidateConfig {
    pub min_timeout_ms: i64,
    pub max_timeout_ms: i64,
    /// `--vm-name-prefix`: a desk's name, after it, must fit a DNS-1123 label.
    pub vm_name_prefix: String,
}

/// What the validating webhook looks at.
pub struct ValidationInput<'a> {
    pub operation: Operation,
    pub name: &'a str,
    pub namespace: &'a str,
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
}

/// Longest desk name the CRD's own rule allows, whatever the VM name prefix.
pub const NAME_MAX: usize = 53;
/// Sessions longer than this get a reminder that a VM stays busy all that time.
pub const LONG_SESSION_MS: i64 = 24 * 3_600_000;
/// Longest user-supplied value quoted back in a message.
const MAX_ECHO_CHARS: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const SECRET_KEY_MAX: usize = 253;
const ACTIONS: [&str; 2] = ["Delete", "Stop"];
const SPEC_FIELDS: [&str; 5] = [
    "timeoutMs",
    "timeoutAction",
    "template",
    "userDataSecretRef",
    "pool",
];
const SECRET_REF_FIELDS: [&str; 2] = ["name", "key"];
/// Unknown fields listed one by one; the rest are counted.
const MAX_UNKNOWN_FIELDS: usize = 10;

/// Judges `input` against the built-in rules and every matching policy, at the current time.
pub fn validate(
    input: &ValidationInput<'_>,
    cfg: &ValidateConfig,
    policies: &PolicySet,
) -> Verdict {
    validate_at(input, cfg, policies, Timestamp::now())
}

/// [`validate`] with the clock passed in, so the expiry warning can be tested.
pub fn validate_at(
    input: &ValidationInput<'_>,
    cfg: &ValidateConfig,
    policies: &PolicySet,
    now: Timestamp,
) -> Verdict {
    let mut verdict = Verdict::default();
    let name = if input.name.is_empty() {
        input
            .object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        input.name
    };
    check_name(name, &cfg.vm_name_prefix, &mut verdict);

    let Some(object) = input.object.as_object() else {
        verdict.deny(
            "",
            format!(
                "the Cyberdesk must be a JSON object, got {}",
                describe(input.object)
            ),
        );
        return verdict;
    };
    let spec = match object.get("spec") {
        Some(Value::Object(spec)) => Some(spec),
        None | Some(Value::Null) => {
            verdict.deny("spec", "spec is required (it may be empty: {})");
            None
        }
        Some(other) => {
            verdict.deny(
                "spec",
                format!("spec must be an object, got {}", describe(other)),
            );
            None
        }
    };
    if let Some(spec) = spec {
        let timeout = check_spec(spec, cfg, &mut verdict);
        if input.operation == Operation::Update {
            if let Some(old) = input.old_object {
                check_update(spec, timeout, old, input.object, now, &mut verdict);
            }
            if spec.get("timeoutAction").is_none_or(Value::is_null) {
                verdict.warnings.push(
                    "spec.timeoutAction is not set: the desktop will be deleted when its time is up (Delete); set \"Stop\" to keep it"
                        .into(),
                );
            }
        }
        if let Some(ms) = timeout.filter(|ms| *ms > LONG_SESSION_MS) {
            verdict.warnings.push(format!(
                "spec.timeoutMs is {}: a desktop that runs longer than 24h keeps its VM busy all that time",
                human_ms(ms)
            ));
        }
    }

    let outcome = policies.evaluate(input.namespace, input.operation, input.object);
    verdict.violations.extend(outcome.violations);
    verdict.warnings.extend(outcome.warnings);
    verdict
}

/// The VM is named `<prefix><name>` (`cyberdesk-<name>` by default), which must be a
/// DNS-1123 label.
fn check_name(name: &str, prefix: &str, verdict: &mut Verdict) {
    const FIELD: &str = "metadata.name";
    if name.is_empty() {
        verdict.deny(FIELD, "a name is required");
        return;
    }
    // The CRD holds every desk to 53 (the default prefix's room) even with the webhooks off;
    // a longer prefix lowers it.
    let max_len = 63usize.saturating_sub(prefix.len()).min(NAME_MAX);
    // Counted in characters: a non-ASCII name gets the format message below, not a
    // byte count that would look wrong to its author.
    let length = name.chars().count();
    if length > max_len {
        let why = if max_len == NAME_MAX {
            "the limit the Cyberdesk CRD sets (room for the default VirtualMachine name cyberdesk-<name> in 63)".to_string()
        } else {
            format!(
                "because the VirtualMachine is named \"{prefix}<name>\" and that must fit in 63"
            )
        };
        verdict.deny(
            FIELD,
            format!(
                "must be no more than {max_len} characters, {why}; this name is {length} characters"
            ),
        );
    }
    let problems = label_problems(name);
    if !problems.is_empty() {
        verdict.deny(
            FIELD,
            format!(
                "{} is not a valid name: {}. A Cyberdesk name must consist of lowercase letters (a-z), digits and '-', and start and end with a letter or digit (e.g. \"alice-desk\"), because it names the VirtualMachine \"{prefix}<name>\"",
                echo(name),
                problems.join(", ")
            ),
        );
    }
}

/// Why `s` is not a DNS-1123 label (ignoring length), in words; empty when it is one.
pub(super) fn label_problems(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        problems.push("it has uppercase letters".to_string());
    }
    if let Some(bad) = s.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || c.is_ascii_uppercase())
    }) {
        problems.push(format!(
            "it has characters other than a-z, 0-9 and '-' (such as {bad:?})"
        ));
    }
    if s.starts_with('-') {
        problems.push("it starts with '-'".to_string());
    }
    if s.ends_with('-') {
        problems.push("it ends with '-'".to_string());
    }
    problems
}

/// Why `s` is not a DNS-1123 subdomain (what Kubernetes requires of ConfigMap and Secret
/// names); `None` when it is one.
fn subdomain_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Some(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters; this one is {}",
            s.chars().count()
        ));
    }
    let well_formed = s.split('.').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    (!well_formed).then(|| {
        format!(
            "{} is not a valid object name: use lowercase letters (a-z), digits, '-' and '.', starting and ending with a letter or digit (e.g. \"my-name\")",
            echo(s)
        )
    })
}

/// Checks the fields of an object `spec`; returns `timeoutMs` when it is valid.
fn check_spec(
    spec: &Map<String, Value>,
    cfg: &ValidateConfig,
    verdict: &mut Verdict,
) -> Option<i64> {
    check_known_fields("spec", spec, &SPEC_FIELDS, verdict);
    let timeout = match check_timeout(spec.get("timeoutMs"), cfg) {
        Ok(timeout) => timeout,
        Err(message) => {
            verdict.deny("spec.timeoutMs", message);
            None
        }
    };

    match spec.get("timeoutAction") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if ACTIONS.contains(&s.as_str()) => {}
        Some(Value::String(s)) if ACTIONS.iter().any(|a| a.eq_ignore_ascii_case(s)) => {
            verdict.deny(
                "spec.timeoutAction",
                format!(
                    "must be \"Delete\" or \"Stop\" (with that capitalisation), got {}",
                    echo(s)
                ),
            );
        }
        Some(other) => {
            verdict.deny(
                "spec.timeoutAction",
                format!("must be \"Delete\" or \"Stop\", got {}", describe(other)),
            );
        }
    }

    check_template_and_user_data(spec, verdict);
    check_pool(spec, verdict);
    timeout
}

/// `spec.template` and `spec.userDataSecretRef`, as a desk and a pool both have them.
pub(super) fn check_template_and_user_data(spec: &Map<String, Value>, verdict: &mut Verdict) {
    match spec.get("template") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {
            verdict.deny(
                "spec.template",
                "must not be empty; leave it out to use the operator's default template",
            );
        }
        Some(Value::String(s)) => {
            if let Some(problem) = subdomain_problem(s) {
                verdict.deny("spec.template", format!("must name a ConfigMap: {problem}"));
            }
        }
        Some(other) => {
            verdict.deny(
                "spec.template",
                format!(
                    "must be the name of a ConfigMap (a string), got {}",
                    describe(other)
                ),
            );
        }
    }

    match spec.get("userDataSecretRef") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => check_secret_ref(r, verdict),
        Some(other) => verdict.deny(
            "spec.userDataSecretRef",
            format!(
                "must be an object with the Secret's name and key, got {}",
                describe(other)
            ),
        ),
    }
}

/// `spec.pool` names a CyberdeskPool of the desk's namespace, whose template and user data
/// the desk takes: it cannot name its own as well.
fn check_pool(spec: &Map<String, Value>, verdict: &mut Verdict) {
    match spec.get("pool") {
        None | Some(Value::Null) => return,
        Some(Value::String(s)) => {
            let problems = label_problems(s);
            if s.is_empty() || s.len() > 63 || !problems.is_empty() {
                verdict.deny(
                    "spec.pool",
                    format!(
                        "must name a CyberdeskPool in the desk's namespace (lowercase letters, digits and '-', at most 63 characters), got {}",
                        echo(s)
                    ),
                );
            }
        }
        Some(other) => {
            verdict.deny(
                "spec.pool",
                format!(
                    "must be the name of a CyberdeskPool (a string), got {}",
                    describe(other)
                ),
            );
            return;
        }
    }
    for field in ["template", "userDataSecretRef"] {
        if spec.get(field).is_some_and(|v| !v.is_null()) {
            verdict.deny(
                &format!("spec.{field}"),
                format!("must not be set with spec.pool: a desk from a pool gets the pool's template and user data; set {field} on the CyberdeskPool"),
            );
        }
    }
}

/// The apiserver prunes fields its schema does not know, so one arriving here means the CRD
/// and the operator disagree (or pruning is off): refuse it rather than ignore a setting the
/// user believes is in force. A misspelt `timeoutMS` would otherwise silently mean "default".
pub(super) fn check_known_fields(
    prefix: &str,
    object: &Map<String, Value>,
    known: &[&str],
    verdict: &mut Verdict,
) {
    let unknown: Vec<&String> = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    for key in unknown.iter().take(MAX_UNKNOWN_FIELDS) {
        let shown = truncate_chars(key, MAX_ECHO_CHARS);
        let field = if is_plain_key(key) {
            format!("{prefix}.{shown}")
        } else {
            format!("{prefix}[{shown}]")
        };
        let hint = known
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key))
            .map(|k| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        verdict.deny(
            &field,
            format!(
                "unknown field {}{hint}; {prefix} has only {}",
                echo(key),
                known.join(", ")
            ),
        );
    }
    if unknown.len() > MAX_UNKNOWN_FIELDS {
        verdict.deny(
            prefix,
            format!(
                "{} more unknown fields not listed",
                unknown.len() - MAX_UNKNOWN_FIELDS
            ),
        );
    }
}

/// `Ok(None)` when absent: the mutating webhook defaults it on CREATE and the controller
/// falls back to the default for objects that predate the webhook.
fn check_timeout(value: Option<&Value>, cfg: &ValidateConfig) -> Result<Option<i64>, String> {
    let range = || {
        format!(
            "between {} ({}) and {} ({})",
            cfg.min_timeout_ms,
            human_ms(cfg.min_timeout_ms),
            cfg.max_timeout_ms,
            human_ms(cfg.max_timeout_ms)
        )
    };
    let ms = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => ms,
            None if n.as_u64().is_some() => {
                return Err(format!(
                    "must be {} milliseconds; {n} is far too large",
                    range()
                ));
            }
            None => {
                return Err(format!(
                    "must be a whole number of milliseconds {}, got {}",
                    range(),
                    truncate_chars(&n.to_string(), MAX_ECHO_CHARS)
                ));
            }
        },
        Some(other) => {
            return Err(format!(
                "must be a number of milliseconds {} (e.g. 3600000 for one hour), got {}",
                range(),
                describe(other)
            ));
        }
    };
    if ms < cfg.min_timeout_ms || ms > cfg.max_timeout_ms {
        return Err(format!(
            "must be {} milliseconds, got {ms} ({})",
            range(),
            human_ms(ms)
        ));
    }
    Ok(Some(ms))
}

fn check_secret_ref(r: &Map<String, Value>, verdict: &mut Verdict) {
    check_known_fields("spec.userDataSecretRef", r, &SECRET_REF_FIELDS, verdict);
    const NAME: &str = "spec.userDataSecretRef.name";
    const KEY: &str = "spec.userDataSecretRef.key";
    match r.get("name") {
        None | Some(Value::Null) => verdict.deny(
            NAME,
            "is required: the name of a Secret in the Cyberdesk's namespace",
        ),
        Some(Value::String(s)) => {
            if let Some(problem) = subdomain_problem(s) {
                verdict.deny(NAME, format!("must name a Secret: {problem}"));
            }
        }
        Some(other) => verdict.deny(
            NAME,
            format!(
                "must be the name of a Secret (a string), got {}",
                describe(other)
            ),
        ),
    }
    match r.get("key") {
        None | Some(Value::Null) => verdict.deny(
            KEY,
            "is required: the key in the Secret that holds the cloud-init user data",
        ),
        Some(Value::String(s)) => {
            if let Some(problem) = secret_key_problem(s) {
                verdict.deny(KEY, problem);
            }
        }
        Some(other) => verdict.deny(
            KEY,
            format!(
                "must be a key in the Secret (a string), got {}",
                describe(other)
            ),
        ),
    }
}

/// Kubernetes' rule for Secret and ConfigMap keys.
fn secret_key_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > SECRET_KEY_MAX {
        return Some(format!(
            "must be no more than {SECRET_KEY_MAX} characters; this one is {}",
            s.chars().count()
        ));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(format!(
            "{} is not a valid Secret key: use letters, digits, '-', '_' and '.' (e.g. \"user-data\")",
            echo(s)
        ));
    }
    if s == "." || s.starts_with("..") {
        return Some(format!(
            "{} is not a valid Secret key: it must not be '.' or start with '..'",
            echo(s)
        ));
    }
    None
}

/// UPDATE rules: what the running VM was built from cannot change under it.
fn check_update(
    spec: &Map<String, Value>,
    new_timeout: Option<i64>,
    old: &Value,
    new: &Value,
    now: Timestamp,
    verdict: &mut Verdict,
) {
    let old_spec = old.get("spec");
    let old_field = |key: &str| old_spec.and_then(|s| s.get(key)).filter(|v| !v.is_null());
    let new_field = |key: &str| spec.get(key).filter(|v| !v.is_null());

    if old_field("pool") != new_field("pool") {
        verdict.deny(
            "spec.pool",
            "spec.pool cannot change: create a new Cyberdesk to take a VM from another pool",
        );
    }
    if vm_exists(old) {
        if old_field("template") != new_field("template") {
            let was = match old_field("template") {
                Some(Value::String(s)) => format!("it was {}", echo(s)),
                Some(other) => format!("it was {}", describe(other)),
                None => "it was not set, so the operator's default template is used".into(),
            };
            verdict.deny(
                "spec.template",
                format!("spec.template cannot change once the VirtualMachine exists ({was}); create a new Cyberdesk to use another template"),
            );
        }
        if old_field("userDataSecretRef") != new_field("userDataSecretRef") {
            let was = match old_field("userDataSecretRef") {
                Some(r) => match (
                    r.get("name").and_then(Value::as_str),
                    r.get("key").and_then(Value::as_str),
                ) {
                    (Some(name), Some(key)) => {
                        format!("it was Secret {} key {}", echo(name), echo(key))
                    }
                    _ => format!("it was {}", describe(r)),
                },
                None => "it was not set".into(),
            };
            verdict.deny(
                "spec.userDataSecretRef",
                format!("spec.userDataSecretRef cannot change once the VirtualMachine exists ({was}); cloud-init runs only when the VM is first created"),
            );
        }
    }

    // Shortening a running session is allowed, but say so when it ends the session at once.
    let Some(timeout) = new_timeout else { return };
    let old_timeout = old_field("timeoutMs").and_then(Value::as_i64);
    if old_timeout.is_some_and(|old| timeout >= old) {
        return;
    }
    let started = [old, new]
        .iter()
        .filter_map(|o| o.pointer("/status/startTime").and_then(Value::as_str))
        .find_map(|s| s.parse::<Timestamp>().ok());
    let Some(started) = started else { return };
    let Some(expiry_ms) = started.as_millisecond().checked_add(timeout) else {
        return;
    };
    if expiry_ms <= now.as_millisecond() {
        let expiry = Timestamp::from_millisecond(expiry_ms)
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        verdict.warnings.push(format!(
            "spec.timeoutMs: the desktop started at {started}, so a lifetime of {} ended{expiry}; it will time out right away",
            human_ms(timeout)
        ));
    }
}

/// The VM exists once the controller has recorded it, by name or by condition.
fn vm_exists(old: &Value) -> bool {
    let Some(status) = old.get("status") else {
        return false;
    };
    let by_ref = status
        .get("virtualMachineRef")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let by_condition = status
        .get("conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(VM_CREATED)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        });
    by_ref || by_condition
}

/// A user-supplied string quoted for a message, cut so a 10 KB name is not echoed back.
pub(super) fn echo(s: &str) -> String {
    let count = s.chars().count();
    if count <= MAX_ECHO_CHARS {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX_ECHO_CHARS).collect();
        format!("{cut:?}… ({count} characters)")
    }
}

/// A JSON value as a message names it: its type, and the value when short.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!(
            "a number ({})",
            truncate_chars(&n.to_string(), MAX_ECHO_CHARS)
        ),
        Value::String(s) => format!("a string ({})", echo(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// `604800000` → `7d`, `5400000` → `90m`: what people compare timeouts in.
pub fn human_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    if ms != 0 {
        for (size, unit) in UNITS {
            if ms % size == 0 {
                return format!("{}{unit}", ms / size);
            }
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests;
