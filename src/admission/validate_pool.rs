//! Validation of a CyberdeskPool's CREATE and UPDATE (pure), in the same shape as a desk's:
//! every problem at once, each with its field path, then every matching policy, which sees
//! the pool as the desks it serves (`PolicySet::evaluate_pool`). The tenant rules for its
//! template and user-data Secret are the desk's (`tenancy.rs`), applied by the caller.

use serde_json::{Map, Value};

use crate::admission::validate::{
    check_known_fields, check_template_and_user_data, describe, echo, label_problems,
};
use crate::model::pool::{MAX_MAX_IDLE_MS, MAX_POOL_NAME, MAX_POOL_SIZE, MIN_MAX_IDLE_MS};
use crate::policy::PolicySet;
use crate::verdict::{Operation, Verdict};

const SPEC_FIELDS: [&str; 5] = [
    "size",
    "maxBooting",
    "template",
    "userDataSecretRef",
    "maxIdleMs",
];
const MAX_BOOTING_LIMIT: i64 = 100;

pub fn validate_pool(
    operation: Operation,
    name: &str,
    namespace: &str,
    object: &Value,
    old: Option<&Value>,
    policies: &PolicySet,
) -> Verdict {
    let mut verdict = validate_pool_spec(operation, name, object, old);
    let outcome = policies.evaluate_pool(namespace, operation, object);
    verdict.violations.extend(outcome.violations);
    verdict.warnings.extend(outcome.warnings);
    verdict
}

/// The built-in rules alone.
fn validate_pool_spec(
    operation: Operation,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> Verdict {
    let mut verdict = Verdict::default();
    check_name(name, &mut verdict);
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        verdict.deny("spec", "spec is required, with at least size");
        return verdict;
    };
    check_known_fields("spec", spec, &SPEC_FIELDS, &mut verdict);
    check_count(
        spec,
        "size",
        0,
        i64::from(MAX_POOL_SIZE),
        true,
        &mut verdict,
    );
    check_count(
        spec,
        "maxBooting",
        1,
        MAX_BOOTING_LIMIT,
        false,
        &mut verdict,
    );
    check_count(
        spec,
        "maxIdleMs",
        MIN_MAX_IDLE_MS,
        MAX_MAX_IDLE_MS,
        false,
        &mut verdict,
    );
    check_template_and_user_data(spec, &mut verdict);
    if operation == Operation::Update
        && let Some(old_spec) = old.and_then(|o| o.get("spec"))
    {
        for field in ["template", "userDataSecretRef"] {
            let before = old_spec.get(field).filter(|v| !v.is_null());
            let after = spec.get(field).filter(|v| !v.is_null());
            if before.is_some() && before != after {
                verdict.deny(
                    &format!("spec.{field}"),
                    format!("spec.{field} cannot change: the pool's VMs were booted with it; create another pool"),
                );
            }
        }
    }
    verdict
}

/// Pool VMs are named `cyberdesk-pool-<name>-<5 characters>`: a DNS-1123 label of 63.
fn check_name(name: &str, verdict: &mut Verdict) {
    const FIELD: &str = "metadata.name";
    let length = name.chars().count();
    if length == 0 {
        verdict.deny(FIELD, "a name is required");
        return;
    }
    if length > MAX_POOL_NAME {
        verdict.deny(
            FIELD,
            format!("must be no more than {MAX_POOL_NAME} characters, so that its VMs' names (cyberdesk-pool-<name>-<5 characters>) fit in 63; this name is {length} characters"),
        );
    }
    let problems = label_problems(name);
    if !problems.is_empty() {
        verdict.deny(
            FIELD,
            format!(
                "{} is not a valid pool name: {}. Use lowercase letters (a-z), digits and '-', starting and ending with a letter or digit",
                echo(name),
                problems.join(", ")
            ),
        );
    }
}

fn check_count(
    spec: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
    required: bool,
    verdict: &mut Verdict,
) {
    let field = format!("spec.{key}");
    match spec.get(key) {
        None | Some(Value::Null) if required => {
            verdict.deny(
                &field,
                format!("is required: a whole number from {min} to {max}"),
            );
        }
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => {}
            _ => verdict.deny(
                &field,
                format!(
                    "must be a whole number from {min} to {max}, got {}",
                    describe(v)
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests;
