use super::*;

#[test]
fn single_line_breaks_are_joined_and_paragraphs_kept() {
    assert_eq!(reflow("one\ntwo\n\nthree\n  four"), "one two\n\nthree four");
    assert_eq!(reflow("plain"), "plain");
}

/// Every description in the committed CRD reads as paragraphs in `kubectl explain`.
#[test]
fn committed_descriptions_have_no_line_break_inside_a_paragraph() {
    fn walk(v: &serde_yaml::Value, path: &str, found: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, child) in m {
                    let key = k.as_str().unwrap_or_default();
                    if key == "description"
                        && let Some(text) = child.as_str()
                        && text.replace("\n\n", "").contains('\n')
                    {
                        found.push(format!("{path}: {text:?}"));
                    }
                    walk(child, &format!("{path}.{key}"), found);
                }
            }
            serde_yaml::Value::Sequence(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), found);
                }
            }
            _ => {}
        }
    }
    let committed = include_str!("../../manifests/base/crd.yaml");
    let mut found = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(committed) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("YAML");
        walk(&value, "", &mut found);
    }
    assert!(
        found.is_empty(),
        "line breaks inside paragraphs: {found:#?}"
    );
}

/// The committed manifest must be what the code generates.
#[test]
fn committed_crd_is_current() {
    let committed = include_str!("../../manifests/base/crd.yaml");
    let generated = crd_yaml().expect("crd renders");
    assert!(
        committed == generated,
        "manifests/base/crd.yaml is stale: run `make crd` (cargo run -- crd > manifests/base/crd.yaml)"
    );
}
