//! The VirtualMachine and VirtualMachineInstance CRDs with the names, versions, scope,
//! printer columns and subresources virt-operator gives them. The schemas keep only the
//! top-level shape (required fields, open `spec`/`status`): virt-api's webhooks, which
//! check the rest, do not run here either.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

use super::{Error, GROUP};

/// Field manager of the CRD applies.
const MANAGER: &str = "cyberdesk-kubevirt-simulator";
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates (or re-applies, unchanged) both CRDs with server-side apply and waits until the
/// apiserver serves them. Safe to call from every test of a binary sharing one cluster.
pub async fn install_kubevirt_crds(client: &kube::Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    let wanted = [vm_crd(), vmi_crd()];
    for crd in &wanted {
        let name = crd_name(crd);
        crds.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for crd in &wanted {
        wait_established(&crds, &crd_name(crd)).await?;
    }
    Ok(())
}

fn crd_name(crd: &Value) -> String {
    crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<(), Error> {
    let established = await_condition(crds.clone(), name, conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(Error::Wait {
            name: name.to_owned(),
            source,
        }),
        Err(_) => Err(Error::NotEstablished {
            name: name.to_owned(),
            timeout: ESTABLISH_TIMEOUT,
        }),
    }
}

/// The names and shape one kind differs in.
struct Kind {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: [&'static str; 2],
    status_subresource: bool,
    schema: Value,
    columns: Value,
}

fn vm_crd() -> Value {
    crd(Kind {
        kind: "VirtualMachine",
        plural: "virtualmachines",
        singular: "virtualmachine",
        short_names: ["vm", "vms"],
        status_subresource: true,
        schema: vm_schema(),
        columns: json!([
            age_column(),
            {"name": "Status", "type": "string", "description": "Human Readable Status",
             "jsonPath": ".status.printableStatus"},
            condition_column("Ready", "Ready", 0),
        ]),
    })
}

fn vmi_crd() -> Value {
    crd(Kind {
        kind: "VirtualMachineInstance",
        plural: "virtualmachineinstances",
        singular: "virtualmachineinstance",
        short_names: ["vmi", "vmis"],
        // virt-controller writes VMI status through the main resource.
        status_subresource: false,
        schema: vmi_schema(),
        columns: json!([
            age_column(),
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "IP", "type": "string", "jsonPath": ".status.interfaces[0].ipAddress"},
            {"name": "NodeName", "type": "string", "jsonPath": ".status.nodeName"},
            condition_column("Ready", "Ready", 0),
            condition_column("Live-Migratable", "LiveMigratable", 1),
            condition_column("Paused", "Paused", 1),
        ]),
    })
}

fn crd(k: Kind) -> Value {
    let version = |name: &str, storage: bool| {
        let mut v = json!({
            "name": name,
            "served": true,
            "storage": storage,
            "schema": {"openAPIV3Schema": k.schema},
            "additionalPrinterColumns": k.columns,
        });
        if let Some(v) = v.as_object_mut() {
            if !storage {
                v.insert("deprecated".into(), json!(true));
                v.insert(
                    "deprecationWarning".into(),
                    json!(format!("{GROUP}/{name} is deprecated; use {GROUP}/v1")),
                );
            }
            if k.status_subresource {
                v.insert("subresources".into(), json!({"status": {}}));
            }
        }
        v
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{GROUP}", k.plural)},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": k.kind,
                "listKind": format!("{}List", k.kind),
                "plural": k.plural,
                "singular": k.singular,
                "shortNames": k.short_names,
                "categories": ["all"],
            },
            "versions": [version("v1", true), version("v1alpha3", false)],
        }
    })
}

fn vm_schema() -> Value {
    json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["template"],
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"printableStatus": {"type": "string", "default": "Stopped"}}
            }
        }
    })
}

fn vmi_schema() -> Value {
    json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    })
}

fn age_column() -> Value {
    json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
}

fn condition_column(name: &str, condition: &str, priority: u8) -> Value {
    let mut column = json!({
        "name": name,
        "type": "string",
        "jsonPath": format!(".status.conditions[?(@.type=='{condition}')].status"),
    });
    if priority > 0
        && let Some(c) = column.as_object_mut()
    {
        c.insert("priority".into(), json!(priority));
    }
    column
}
