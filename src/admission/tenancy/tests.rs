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
    let a = desk(json!({"userDataSecretRef": {"name": "a", "key": "userdata"}, "timeoutMs": 1}));
    let b = desk(json!({"userDataSecretRef": {"name": "b", "key": "userdata"}, "timeoutMs": 1}));
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
