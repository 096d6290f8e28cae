//! Tenant rules of the validating webhook (pure): a desk gets only user data its requester
//! may read, and only a template allowed in its namespace. The lookups (a
//! SubjectAccessReview, the template catalog) happen before; this module judges their
//! answers, so every rule is a unit test.

use serde_json::Value;

use crate::admission::validate::Verdict;
use crate::catalog::{ResolvedTemplate, TemplateRefusal};
use crate::text::truncate;

pub const SECRET_NAME_FIELD: &str = "spec.userDataSecretRef.name";
pub const SECRET_KEY_FIELD: &str = "spec.userDataSecretRef.key";
pub const TEMPLATE_FIELD: &str = "spec.template";
pub const POOL_FIELD: &str = "spec.pool";
/// Longest Secret name worth asking about (a DNS-1123 subdomain); validation refuses longer.
const MAX_SECRET_NAME: usize = 253;

/// What the apiserver said about the requester reading the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretAccessFact {
    Allowed,
    /// The authorizer's reason, possibly empty.
    Denied(String),
    /// The review could not be made; the webhook fails closed.
    Unknown(String),
}

/// The template the desk would get, as the catalog sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateFact {
    Resolved(ResolvedTemplate),
    Refused(TemplateRefusal),
    /// This replica has not listed the templates yet.
    NotLoaded,
}

/// Facts gathered for one review; `None` = the rule did not need checking.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenancyFacts {
    pub secret_access: Option<SecretAccessFact>,
    pub template: Option<TemplateFact>,
    /// What the apiserver said about the requester using the desk's pool (`use` on
    /// `cyberdeskpools`): the same three answers as for a Secret.
    pub pool_use: Option<SecretAccessFact>,
}

/// Did the value at `pointer` change (always true on CREATE)? Rules are checked again only
/// when the field they guard changes, so a later edit of `timeoutMs` is never blocked by a
/// template's allowed list that changed after the desk was admitted.
pub fn changed(old: Option<&Value>, new: &Value, pointer: &str) -> bool {
    let Some(old) = old else { return true };
    fn present<'v>(v: &'v Value, pointer: &str) -> Option<&'v Value> {
        v.pointer(pointer).filter(|x| !x.is_null())
    }
    present(old, pointer) != present(new, pointer)
}

/// The Secret name to ask about: a plausible name whose reference is new or changed, or
/// whose template changed (another template may put the value inline where the old one
/// passed it by reference, so whoever changes it must be able to read the Secret too).
pub fn secret_to_check<'a>(old: Option<&Value>, new: &'a Value) -> Option<&'a str> {
    let name = new
        .pointer("/spec/userDataSecretRef/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= MAX_SECRET_NAME)?;
    (changed(old, new, "/spec/userDataSecretRef") || changed(old, new, "/spec/template"))
        .then_some(name)
}

/// The pool to ask about: a plausible `spec.pool` that is new or changed. A desk from a
/// pool gets the pool's template and user data, so naming it needs the pool's `use` verb.
pub fn pool_to_check<'a>(old: Option<&Value>, new: &'a Value) -> Option<&'a str> {
    let pool = new
        .pointer("/spec/pool")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty() && p.len() <= 63)?;
    changed(old, new, "/spec/pool").then_some(pool)
}

/// The template to resolve: `Some(requested)` (inner `None` = the default) when the template
/// or the Secret reference is new or changed (the key rule depends on both). A non-string
/// `spec.template` is left to validation.
pub fn template_to_check<'a>(old: Option<&Value>, new: &'a Value) -> Option<Option<&'a str>> {
    let requested = match new.pointer("/spec/template") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return None,
    };
    (changed(old, new, "/spec/template") || changed(old, new, "/spec/userDataSecretRef"))
        .then_some(requested)
}

/// Adds the violations the facts call for.
/// The message an access check refuses with, if it does: `denied` gets the authorizer's
/// reason as ` (reason)` (or nothing), `unknown` the error of a check that failed.
fn refusal(
    fact: Option<&SecretAccessFact>,
    denied: impl FnOnce(String) -> String,
    unknown: impl FnOnce(String) -> String,
) -> Option<String> {
    match fact? {
        SecretAccessFact::Allowed => None,
        SecretAccessFact::Denied(reason) if reason.is_empty() => Some(denied(String::new())),
        SecretAccessFact::Denied(reason) => Some(denied(format!(" ({})", truncate(reason, 200)))),
        SecretAccessFact::Unknown(error) => Some(unknown(truncate(error, 200))),
    }
}

pub fn judge(
    facts: &TenancyFacts,
    user: &str,
    namespace: &str,
    object: &Value,
    verdict: &mut Verdict,
) {
    let secret = object
        .pointer("/spec/userDataSecretRef/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let secret = truncate(secret, 63);
    let user = truncate(user, 120);
    let namespace = truncate(namespace, 63);
    let refused_secret = refusal(
        facts.secret_access.as_ref(),
        |why| {
            format!(
                "user {user:?} may not read Secret {secret:?} in namespace {namespace:?}: the permission \"get\" on \"secrets\" (resourceName {secret:?}) is missing{why}; a desk may only use user data its creator can read"
            )
        },
        |error| {
            format!(
                "could not check that user {user:?} may read Secret {secret:?} in namespace {namespace:?} ({error}); refused to be safe, try again"
            )
        },
    );
    if let Some(message) = refused_secret {
        verdict.deny(SECRET_NAME_FIELD, message);
    }
    let pool = object
        .pointer("/spec/pool")
        .and_then(Value::as_str)
        .unwrap_or("");
    let pool = truncate(pool, 63);
    let refused_pool = refusal(
        facts.pool_use.as_ref(),
        |why| {
            format!(
                "user {user:?} may not use CyberdeskPool {pool:?} in namespace {namespace:?}: the permission \"use\" on \"cyberdeskpools\" (resourceName {pool:?}) is missing{why}; a desk from a pool gets the pool's template and user data, which its owner grants with that verb"
            )
        },
        |error| {
            format!(
                "could not check that user {user:?} may use CyberdeskPool {pool:?} in namespace {namespace:?} ({error}); refused to be safe, try again"
            )
        },
    );
    if let Some(message) = refused_pool {
        verdict.deny(POOL_FIELD, message);
    }
    match &facts.template {
        None => {}
        Some(TemplateFact::Refused(refusal)) => verdict.deny(TEMPLATE_FIELD, refusal.to_string()),
        Some(TemplateFact::NotLoaded) => verdict.deny(
            TEMPLATE_FIELD,
            "the VM templates are not loaded on this replica yet; try again in a moment",
        ),
        Some(TemplateFact::Resolved(template)) => {
            let key = object
                .pointer("/spec/userDataSecretRef/key")
                .and_then(Value::as_str);
            if let Some(problem) = key.and_then(|k| template.secret_key_problem(k)) {
                verdict.deny(SECRET_KEY_FIELD, problem);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn desk(spec: Value) -> Value {
        json!({"metadata": {"name": "d"}, "spec": spec})
    }

    fn secret_ref_template() -> ResolvedTemplate {
        ResolvedTemplate {
            configmap: None,
            text: "cloudInitNoCloud: {secretRef: {name: '${user_data_secret_name}'}}".into(),
        }
    }

    fn judged(facts: TenancyFacts, spec: Value) -> Verdict {
        let mut verdict = Verdict::default();
        judge(&facts, "alice", "team-a", &desk(spec), &mut verdict);
        verdict
    }

    #[test]
    fn checks_run_on_create_and_when_the_field_changes() {
        let a =
            desk(json!({"userDataSecretRef": {"name": "a", "key": "userdata"}, "timeoutMs": 1}));
        let b =
            desk(json!({"userDataSecretRef": {"name": "b", "key": "userdata"}, "timeoutMs": 1}));
        let a_longer =
            desk(json!({"userDataSecretRef": {"name": "a", "key": "userdata"}, "timeoutMs": 2}));
        assert_eq!(secret_to_check(None, &a), Some("a"));
        assert_eq!(secret_to_check(Some(&a), &b), Some("b"));
        assert_eq!(secret_to_check(Some(&a), &a_longer), None);
        // Another template may inline what the old one passed by reference: ask again.
        let mut a_inline = a.clone();
        a_inline["spec"]["template"] = json!("inline");
        assert_eq!(secret_to_check(Some(&a), &a_inline), Some("a"));
        assert_eq!(secret_to_check(None, &desk(json!({}))), None);
        assert_eq!(
            secret_to_check(None, &desk(json!({"userDataSecretRef": {"name": 5}}))),
            None
        );

        let t = desk(json!({"template": "gpu"}));
        assert_eq!(template_to_check(None, &t), Some(Some("gpu")));
        assert_eq!(template_to_check(None, &desk(json!({}))), Some(None));
        assert_eq!(template_to_check(Some(&t), &t), None);
        assert_eq!(
            template_to_check(Some(&desk(json!({}))), &t),
            Some(Some("gpu"))
        );
        assert_eq!(template_to_check(None, &desk(json!({"template": 1}))), None);
        // A new Secret reference re-checks the template too: the key rule needs both.
        assert_eq!(template_to_check(Some(&a_longer), &b), Some(None));
    }

    #[test]
    fn a_denied_secret_is_a_field_error_naming_secret_and_permission() {
        let v = judged(
            TenancyFacts {
                secret_access: Some(SecretAccessFact::Denied(String::new())),
                template: None,
                pool_use: None,
            },
            json!({"userDataSecretRef": {"name": "creds", "key": "userdata"}}),
        );
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].field, SECRET_NAME_FIELD);
        let m = &v.violations[0].message;
        assert!(
            m.contains("\"creds\"")
                && m.contains("\"get\"")
                && m.contains("secrets")
                && m.contains("alice"),
            "{m}"
        );
    }

    #[test]
    fn a_pooled_desk_needs_use_on_its_pool() {
        let d = desk(json!({"pool": "warm", "timeoutMs": 1}));
        assert_eq!(pool_to_check(None, &d), Some("warm"));
        assert_eq!(pool_to_check(Some(&d), &d), None);
        assert_eq!(pool_to_check(None, &desk(json!({}))), None);
        let v = judged(
            TenancyFacts {
                pool_use: Some(SecretAccessFact::Denied(String::new())),
                ..Default::default()
            },
            json!({"pool": "warm"}),
        );
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].field, POOL_FIELD);
        let m = &v.violations[0].message;
        assert!(
            m.contains("may not use CyberdeskPool \"warm\"")
                && m.contains("\"use\"")
                && m.contains("alice"),
            "{m}"
        );
        let failed = judged(
            TenancyFacts {
                pool_use: Some(SecretAccessFact::Unknown("timed out".into())),
                ..Default::default()
            },
            json!({"pool": "warm"}),
        );
        assert_eq!(failed.violations[0].field, POOL_FIELD);
    }

    #[test]
    fn a_failed_review_fails_closed() {
        let v = judged(
            TenancyFacts {
                secret_access: Some(SecretAccessFact::Unknown("timed out".into())),
                template: None,
                pool_use: None,
            },
            json!({"userDataSecretRef": {"name": "creds", "key": "userdata"}}),
        );
        assert_eq!(v.violations.len(), 1);
        assert!(v.violations[0].message.contains("timed out"));
    }

    #[test]
    fn allowed_or_unchecked_adds_nothing() {
        let spec = json!({"userDataSecretRef": {"name": "creds", "key": "userdata"}});
        assert!(judged(TenancyFacts::default(), spec.clone()).allowed());
        let facts = TenancyFacts {
            secret_access: Some(SecretAccessFact::Allowed),
            template: Some(TemplateFact::Resolved(secret_ref_template())),
            pool_use: None,
        };
        assert!(judged(facts, spec).allowed());
    }

    #[test]
    fn template_refusals_are_field_errors() {
        let refusal = TemplateRefusal::NotAllowed {
            name: "gpu".into(),
            namespace: "team-b".into(),
            allowed: "team-a".into(),
        };
        let v = judged(
            TenancyFacts {
                secret_access: None,
                template: Some(TemplateFact::Refused(refusal)),
                pool_use: None,
            },
            json!({"template": "gpu"}),
        );
        assert_eq!(v.violations[0].field, TEMPLATE_FIELD);
        assert!(v.violations[0].message.contains("team-b"));
        let v = judged(
            TenancyFacts {
                secret_access: None,
                template: Some(TemplateFact::NotLoaded),
                pool_use: None,
            },
            json!({}),
        );
        assert!(!v.allowed());
    }

    #[test]
    fn secret_ref_templates_need_a_key_kubevirt_reads() {
        let facts = TenancyFacts {
            secret_access: None,
            template: Some(TemplateFact::Resolved(secret_ref_template())),
            pool_use: None,
        };
        let v = judged(
            facts.clone(),
            json!({"userDataSecretRef": {"name": "s", "key": "cloud-init"}}),
        );
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].field, SECRET_KEY_FIELD);
        assert!(v.violations[0].message.contains("cloud-init"));
        for key in crate::template::SECRET_REF_KEYS {
            assert!(
                judged(
                    facts.clone(),
                    json!({"userDataSecretRef": {"name": "s", "key": key}})
                )
                .allowed()
            );
        }
        // A template with the value inline reads any key.
        let inline = TenancyFacts {
            secret_access: None,
            template: Some(TemplateFact::Resolved(ResolvedTemplate {
                configmap: Some("inline".into()),
                text: "userDataBase64: '${user_data_base64}'".into(),
            })),
            pool_use: None,
        };
        assert!(
            judged(
                inline,
                json!({"userDataSecretRef": {"name": "s", "key": "cloud-init"}})
            )
            .allowed()
        );
    }
}
