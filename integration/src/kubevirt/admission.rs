//! virt-api's validation of VirtualMachines, as far as the tests need it: KubeVirt refuses
//! a VM whose template names a disk with no volume of that name (virt-api answers
//! "spec.template.spec.domain.devices.disks[0].Name 'x' not found"). Played by a
//! ValidatingAdmissionPolicy, so the apiserver itself refuses the write, as it does when
//! virt-api's webhook says no.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::Error;

const NAME: &str = "kubevirt-simulator-vm-validation";
const MANAGER: &str = "kubevirt-simulator";

/// Every disk needs a volume of the same name.
const DISKS_HAVE_VOLUMES: &str = "!has(object.spec.template.spec) \
    || !has(object.spec.template.spec.domain) \
    || !has(object.spec.template.spec.domain.devices) \
    || !has(object.spec.template.spec.domain.devices.disks) \
    || object.spec.template.spec.domain.devices.disks.all(d, \
         has(object.spec.template.spec.volumes) \
         && object.spec.template.spec.volumes.exists(v, v.name == d.name))";

/// Installs (or updates) the policy and its binding for all namespaces. The apiserver
/// starts enforcing it a moment later.
pub async fn install_vm_admission(client: &kube::Client) -> Result<(), Error> {
    let params = PatchParams::apply(MANAGER).force();
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [super::GROUP], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["virtualmachines"],
            }]},
            "validations": [{
                "expression": DISKS_HAVE_VOLUMES,
                "message": "spec.template.spec.domain.devices.disks: a disk names no volume of the template (virt-api: disk Name not found)",
                "reason": "Invalid",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": NAME},
        "spec": {"policyName": NAME, "validationActions": ["Deny"]},
    });
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    policies
        .patch(NAME, &params, &Patch::Apply(&policy))
        .await?;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    bindings
        .patch(NAME, &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}
