//! The VM template (pure): parse, substitute `${variables}` inside string values, and
//! stamp the fields the operator owns. Substituting after parsing means a value can never
//! inject YAML structure.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::model::names;

/// The built-in template, used when the ConfigMap is absent; the same file the shipped
/// ConfigMap is generated from.
pub const BUILTIN_TEMPLATE: &str = include_str!("../manifests/base/vm-template/template.yaml");

/// Exactly the variables a template may use.
pub const VARIABLES: [&str; 6] = [
    "vm_name",
    "namespace",
    "cyberdesk_name",
    "managed_by",
    USER_DATA_BASE64,
    USER_DATA_SECRET_NAME,
];
/// The desk's user-data Secret name, for `cloudInitNoCloud.secretRef`: KubeVirt reads the
/// Secret itself, so neither the operator nor the VM spec ever holds the data.
pub const USER_DATA_SECRET_NAME: &str = "user_data_secret_name";
/// The user data inline, base64 (the previous operator's variable); the operator must be
/// allowed to read the Secret for it.
pub const USER_DATA_BASE64: &str = "user_data_base64";
/// Keys KubeVirt reads from a `cloudInitNoCloud.secretRef` Secret.
pub const SECRET_REF_KEYS: [&str; 2] = ["userdata", "userData"];
/// Cloud-init given to a desk without `userDataSecretRef`: valid and empty.
pub const EMPTY_CLOUD_CONFIG: &str = "#cloud-config\n{}\n";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the VM template is not valid YAML: {0}")]
    Yaml(String),
    #[error(
        "the VM template uses unknown variable ${{{name}}} at {path}; the known variables are {}",
        VARIABLES.join(", ")
    )]
    UnknownVariable { name: String, path: String },
    #[error("the VM template has an empty or unterminated ${{...}} reference at {path}")]
    BadReference { path: String },
    #[error(
        "the VM template must be a kubevirt.io/v1 VirtualMachine, not {api_version:?} {kind:?}"
    )]
    WrongKind { api_version: String, kind: String },
    #[error("the VM template has no spec.template object (the VMI template KubeVirt requires)")]
    NoVmiTemplate,
    #[error(
        "the VM template uses ${{user_data_secret_name}} inside a longer value at {path}; it must be the whole value (the Secret's name, for cloudInitNoCloud.secretRef.name)"
    )]
    SecretNameNotWhole { path: String },
    #[error(
        "the VM template writes ${{{name}}} with YAML escapes; write it literally, so the webhook sees what the template uses"
    )]
    NotLiteral { name: &'static str },
}

/// Values substituted into a template for one Cyberdesk.
#[derive(Clone, Debug)]
pub struct TemplateVars {
    pub vm_name: String,
    pub namespace: String,
    pub cyberdesk_name: String,
    pub user_data_base64: String,
    /// Empty when the desk names no Secret (see [`render`]).
    pub user_data_secret_name: String,
}

impl TemplateVars {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "vm_name" => Some(&self.vm_name),
            "namespace" => Some(&self.namespace),
            "cyberdesk_name" => Some(&self.cyberdesk_name),
            "managed_by" => Some(names::MANAGED_BY_VALUE),
            USER_DATA_BASE64 => Some(&self.user_data_base64),
            USER_DATA_SECRET_NAME => Some(&self.user_data_secret_name),
            _ => None,
        }
    }
}

/// What the operator stamps on every rendered VM.
#[derive(Clone, Debug)]
pub struct Ownership {
    /// ownerReference to the Cyberdesk (`apiVersion`, `kind`, `name`, `uid`, controller);
    /// `None` when the VM lives in another namespace than its desk, where Kubernetes would
    /// take the reference for a missing owner.
    pub owner_reference: Option<Value>,
    /// The labels of the VM and its template: `model::placement::vm_labels`.
    pub labels: BTreeMap<String, String>,
}

/// A VM is only ever created to run; a timed-out desk's VM is halted by a patch instead.
const CREATED_RUN_STRATEGY: &str = "Always";

/// Parses a template and checks it renders, so a broken ConfigMap is reported when it is
/// loaded rather than when the next desk needs it.
pub fn parse(text: &str) -> Result<Value, TemplateError> {
    let value: Value =
        serde_yaml::from_str(text).map_err(|e| TemplateError::Yaml(e.to_string()))?;
    check_kind(&value)?;
    let probe = TemplateVars {
        vm_name: "cyberdesk-probe".into(),
        namespace: "probe".into(),
        cyberdesk_name: "probe".into(),
        user_data_base64: String::new(),
        user_data_secret_name: String::new(),
    };
    let mut copy = value.clone();
    substitute(&mut copy, &probe, &mut String::new())?;
    // The webhook decides by a text search which user-data variables a template uses (see
    // catalog::ResolvedTemplate::uses); refuse a template where that search would miss one.
    for name in [USER_DATA_BASE64, USER_DATA_SECRET_NAME] {
        let literal = format!("${{{name}}}");
        if !text.contains(&literal) && mentions(&value, &literal) {
            return Err(TemplateError::NotLiteral { name });
        }
    }
    Ok(value)
}

/// Does any string in `value` contain `needle`?
fn mentions(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| mentions(v, needle)),
        Value::Object(map) => map.values().any(|v| mentions(v, needle)),
        _ => false,
    }
}

fn check_kind(value: &Value) -> Result<(), TemplateError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != "kubevirt.io/v1" || kind != "VirtualMachine" {
        return Err(TemplateError::WrongKind {
            api_version: api_version.into(),
            kind: kind.into(),
        });
    }
    if !value
        .pointer("/spec/template")
        .is_some_and(Value::is_object)
    {
        return Err(TemplateError::NoVmiTemplate);
    }
    Ok(())
}

/// Renders a parsed template for one Cyberdesk. A desk without a user-data Secret leaves
/// `${user_data_secret_name}` empty; a cloud-init source whose `secretRef` names nothing
/// then gets the empty cloud-config inline instead, which KubeVirt accepts.
pub fn render(
    template: &Value,
    vars: &TemplateVars,
    ownership: &Ownership,
) -> Result<Value, TemplateError> {
    check_kind(template)?;
    let mut vm = template.clone();
    substitute(&mut vm, vars, &mut String::new())?;
    if vars.user_data_secret_name.is_empty() {
        inline_empty_secret_refs(&mut vm);
    }
    stamp(&mut vm, vars, ownership);
    Ok(vm)
}

/// `cloudInitNoCloud`/`cloudInitConfigDrive` volumes whose `secretRef.name` is empty.
fn inline_empty_secret_refs(vm: &mut Value) {
    let Some(Value::Array(volumes)) = vm.pointer_mut("/spec/template/spec/volumes") else {
        return;
    };
    for volume in volumes {
        for source in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
            let Some(Value::Object(cloud_init)) = volume.get_mut(source) else {
                continue;
            };
            let empty_ref = cloud_init.get("secretRef").is_some_and(|r| {
                r.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
            });
            if empty_ref {
                cloud_init.remove("secretRef");
                // Never a second source: keep what the template already gives inline.
                if !cloud_init.contains_key("userData")
                    && !cloud_init.contains_key("userDataBase64")
                {
                    cloud_init.insert("userData".into(), json!(EMPTY_CLOUD_CONFIG));
                }
            }
        }
    }
}

fn substitute(
    value: &mut Value,
    vars: &TemplateVars,
    path: &mut String,
) -> Result<(), TemplateError> {
    match value {
        Value::String(s) => {
            if s.contains("${") {
                *s = substitute_str(s, vars, path)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute(item, vars, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                substitute(item, vars, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn substitute_str(s: &str, vars: &TemplateVars, path: &str) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(TemplateError::BadReference {
                path: path.to_string(),
            });
        };
        let name = &after[..end];
        if name.is_empty() {
            return Err(TemplateError::BadReference {
                path: path.to_string(),
            });
        }
        // The Secret's name is checked against the requester as a whole; a prefix or suffix
        // would make KubeVirt read another Secret than the one checked.
        if name == USER_DATA_SECRET_NAME && s != "${user_data_secret_name}" {
            return Err(TemplateError::SecretNameNotWhole {
                path: path.to_string(),
            });
        }
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(TemplateError::UnknownVariable {
                    name: name.chars().take(64).collect(),
                    path: path.to_string(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn object_at<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value.get(key).is_some_and(Value::is_object) {
        value[key] = json!({});
    }
    match value.get_mut(key) {
        Some(Value::Object(map)) => map,
        // Unreachable: the key was just set to an object.
        _ => unreachable!("{key} was set to an object above"),
    }
}

fn merge_labels(meta: &mut Map<String, Value>, labels: &BTreeMap<String, String>) {
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta.insert("labels".into(), json!({}));
    }
    if let Some(Value::Object(existing)) = meta.get_mut("labels") {
        for (k, v) in labels {
            existing.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// The operator owns name, namespace, labels, ownerReference and runStrategy; whatever the
/// template says about them is overwritten. Server-populated fields are dropped.
fn stamp(vm: &mut Value, vars: &TemplateVars, ownership: &Ownership) {
    let labels = &ownership.labels;
    if let Value::Object(root) = &mut *vm {
        root.remove("status");
    }
    let meta = object_at(vm, "metadata");
    for key in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "deletionTimestamp",
    ] {
        meta.remove(key);
    }
    meta.insert("name".into(), json!(vars.vm_name));
    meta.insert("namespace".into(), json!(vars.namespace));
    match &ownership.owner_reference {
        Some(owner) => meta.insert("ownerReferences".into(), json!([owner])),
        None => meta.remove("ownerReferences"),
    };
    merge_labels(meta, labels);

    let spec = object_at(vm, "spec");
    spec.remove("running");
    spec.insert("runStrategy".into(), json!(CREATED_RUN_STRATEGY));
    if let Some(template) = spec.get_mut("template") {
        merge_labels(object_at(template, "metadata"), labels);
    }
}

#[cfg(test)]
mod tests;
