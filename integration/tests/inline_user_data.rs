//! The previous operator's inline user data (`${user_data_base64}`), which needs the opt-in
//! component manifests/components/inline-user-data. Its own binary: the component grants
//! the operator cluster-wide Secret reads, which other tests prove it does not have.

use std::time::Duration;

use base64::Engine;
use cyberdesk_integration::cluster::{apply_file, cluster, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{ready_operator, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::model::conditions;

const COMPONENT: &str = "manifests/components/inline-user-data";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_user_data_needs_the_component_and_then_works_as_before() {
    let c = cluster();
    let _operator = ready_operator(&c, "inline", &reconciler_only_flags(false)).await;
    let client = c.client().await;
    let ns = namespace(&client, "inline").await;
    let _sim = Simulator::start(
        client.clone(),
        SimulatorOptions {
            namespace: Some(ns.clone()),
            ..Default::default()
        },
    );
    let admin = c.kubectl();
    // The component's template alone, without its RBAC.
    apply_file(&c, format!("{COMPONENT}/template.yaml")).expect("template");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cloud, namespace: {ns}}}\nstringData: {{userdata: \"#cloud-config\\nhostname: desk\\n\"}}\n"
    );
    assert!(admin.apply(&secret, &[]).expect("kubectl").success);
    let spec =
        "{template: cyberdesk-vm-template-inline, userDataSecretRef: {name: cloud, key: userdata}}";
    assert!(
        admin
            .apply(&desk_yaml(&ns, "inline", spec), &[])
            .expect("kubectl")
            .success
    );
    // A Secret that does not exist yet is reported the same way, and picked up once created.
    let later =
        "{template: cyberdesk-vm-template-inline, userDataSecretRef: {name: later, key: userdata}}";
    assert!(
        admin
            .apply(&desk_yaml(&ns, "later", later), &[])
            .expect("kubectl")
            .success
    );

    let apis = Apis::new(&client, &ns);
    // The template may first be "not found" until the operator's watch has it.
    let created = apis
        .wait_condition(
            "inline",
            conditions::VM_CREATED,
            "UserDataUnavailable",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        created.message.contains("may not get Secret cloud")
            && created.message.contains("inline-user-data"),
        "{}",
        created.message
    );
    eventually(
        Duration::from_secs(10),
        "a UserDataUnavailable Warning event",
        || async {
            let out = admin
                .run(
                    &[
                        "get",
                        "events",
                        "-n",
                        &ns,
                        "--field-selector",
                        "reason=UserDataUnavailable",
                        "-o",
                        "json",
                    ],
                    None,
                )
                .ok()?;
            (out.stdout.contains("\"Warning\"") && out.stdout.contains("inline-user-data"))
                .then_some(())
        },
    )
    .await;
    assert!(
        apis.vms
            .get_opt("cyberdesk-inline")
            .await
            .expect("get")
            .is_none()
    );

    // With the component's RBAC the desk recovers on its own and the VM carries the data.
    apply_file(&c, format!("{COMPONENT}/rbac.yaml")).expect("component rbac");
    apis.wait_phase("inline", "Running", Duration::from_secs(40))
        .await;
    let vm = apis.vms.get("cyberdesk-inline").await.expect("vm");
    let vm = serde_json::to_value(&vm).expect("json");
    let expected =
        base64::engine::general_purpose::STANDARD.encode("#cloud-config\nhostname: desk\n");
    let inline = vm
        .pointer("/spec/template/spec/volumes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/cloudInitNoCloud/userDataBase64"))
        .any(|d| d == expected.as_str());
    assert!(inline, "user data not inline in the VM: {vm}");

    eventually(
        Duration::from_secs(40),
        "the missing Secret reported",
        || async {
            let desk = apis.desks.get_opt("later").await.ok()??;
            let message = desk.status?.message?;
            message.contains("Secret later not found").then_some(())
        },
    )
    .await;
    let created = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: later, namespace: {ns}}}\nstringData: {{userdata: hi}}\n"
    );
    assert!(admin.apply(&created, &[]).expect("kubectl").success);
    apis.wait_phase("later", "Running", Duration::from_secs(40))
        .await;
}
