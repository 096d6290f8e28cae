use super::*;

fn vars() -> TemplateVars {
    TemplateVars {
        vm_name: "cyberdesk-alice".into(),
        namespace: "team-a".into(),
        cyberdesk_name: "alice".into(),
        user_data_base64: "I2Nsb3VkLWNvbmZpZw==".into(),
        user_data_secret_name: "alice-cloud-init".into(),
    }
}

const INLINE_TEMPLATE: &str = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec:\n      volumes:\n        - name: cloudinit\n          cloudInitNoCloud: {userDataBase64: '${user_data_base64}'}\n";

fn ownership() -> Ownership {
    Ownership {
        owner_reference: Some(
            json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "name": "alice",
                                "uid": "u-1", "controller": true, "blockOwnerDeletion": true}),
        ),
        labels: crate::model::placement::vm_labels("team-a", "alice", "u-1"),
    }
}

#[test]
fn builtin_template_renders_with_every_owned_field() {
    let t = parse(BUILTIN_TEMPLATE).expect("builtin parses");
    let vm = render(&t, &vars(), &ownership()).expect("renders");
    assert_eq!(vm["metadata"]["name"], "cyberdesk-alice");
    assert_eq!(vm["metadata"]["namespace"], "team-a");
    assert_eq!(vm["metadata"]["labels"]["cyberdesk-instance"], "alice");
    assert_eq!(
        vm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "cyberdesk-operator"
    );
    assert_eq!(
        vm["spec"]["template"]["metadata"]["labels"]["app"],
        "cyberdesk"
    );
    assert_eq!(vm["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(vm["spec"]["runStrategy"], "Always");
    let text = vm.to_string();
    assert!(!text.contains("${"));
    // The shipped template hands KubeVirt the Secret's name, never its value.
    let cloud_init = &vm["spec"]["template"]["spec"]["volumes"][1]["cloudInitNoCloud"];
    assert_eq!(cloud_init["secretRef"]["name"], "alice-cloud-init");
    assert!(cloud_init.get("userDataBase64").is_none());
    assert!(!text.contains("I2Nsb3VkLWNvbmZpZw=="));
}

#[test]
fn a_vm_elsewhere_gets_labels_and_no_owner_reference() {
    let t = parse("apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  ownerReferences: [{kind: X, name: x, uid: x}]\nspec: {template: {spec: {}}}\n").expect("parses");
    let mut v = vars();
    v.namespace = "kubevirt".into();
    let ownership = Ownership {
        owner_reference: None,
        labels: crate::model::placement::vm_labels("team-a", "alice", "u-1"),
    };
    let vm = render(&t, &v, &ownership).expect("renders");
    assert_eq!(vm["metadata"]["namespace"], "kubevirt");
    assert!(vm["metadata"].get("ownerReferences").is_none(), "{vm}");
    for labels in [
        &vm["metadata"]["labels"],
        &vm["spec"]["template"]["metadata"]["labels"],
    ] {
        assert_eq!(labels[names::LABEL_DESK_UID], "u-1");
        assert_eq!(labels[names::LABEL_DESK_NAMESPACE], "team-a");
    }
}

#[test]
fn a_desk_without_a_secret_gets_empty_cloud_config_inline() {
    let t = parse(BUILTIN_TEMPLATE).expect("builtin parses");
    let mut v = vars();
    v.user_data_secret_name = String::new();
    let vm = render(&t, &v, &ownership()).expect("renders");
    let cloud_init = &vm["spec"]["template"]["spec"]["volumes"][1]["cloudInitNoCloud"];
    assert!(cloud_init.get("secretRef").is_none(), "{cloud_init}");
    assert_eq!(cloud_init["userData"], EMPTY_CLOUD_CONFIG);
    // With a Secret, the same template keeps its secretRef.
    let with = render(&t, &vars(), &ownership()).expect("renders");
    assert!(
        with["spec"]["template"]["spec"]["volumes"][1]["cloudInitNoCloud"]
            .get("userData")
            .is_none()
    );
}

#[test]
fn the_secret_name_is_a_whole_value_written_literally() {
    let partial = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {template: {x: '${user_data_secret_name}-cloudinit'}}\n";
    assert!(matches!(
        parse(partial),
        Err(TemplateError::SecretNameNotWhole { .. })
    ));
    let escaped = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {template: {x: \"\\u0024{user_data_base64}\"}}\n";
    assert_eq!(
        parse(escaped),
        Err(TemplateError::NotLiteral {
            name: USER_DATA_BASE64
        })
    );
}

#[test]
fn an_empty_secret_ref_never_adds_a_second_source() {
    let t = parse("apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {template: {spec: {volumes: [{name: c, cloudInitNoCloud: {secretRef: {name: '${user_data_secret_name}'}, userDataBase64: '${user_data_base64}'}}]}}}\n").expect("parses");
    let mut v = vars();
    v.user_data_secret_name = String::new();
    let vm = render(&t, &v, &ownership()).expect("renders");
    let cloud_init = &vm["spec"]["template"]["spec"]["volumes"][0]["cloudInitNoCloud"];
    assert!(
        cloud_init.get("secretRef").is_none() && cloud_init.get("userData").is_none(),
        "{cloud_init}"
    );
    assert_eq!(cloud_init["userDataBase64"], "I2Nsb3VkLWNvbmZpZw==");
}

#[test]
fn inline_user_data_still_renders_base64() {
    let t = parse(INLINE_TEMPLATE).expect("parses");
    let vm = render(&t, &vars(), &ownership()).expect("renders");
    assert_eq!(
        vm["spec"]["template"]["spec"]["volumes"][0]["cloudInitNoCloud"]["userDataBase64"],
        "I2Nsb3VkLWNvbmZpZw=="
    );
}

#[test]
fn operator_overrides_what_it_owns() {
    let t = parse(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: other, labels: {app: evil, team: x}, uid: abc}\n\
         spec: {running: true, runStrategy: Manual, template: {spec: {domain: {devices: {}}}}}\nstatus: {ready: true}\n",
    )
    .expect("parses");
    let vm = render(&t, &vars(), &ownership()).expect("renders");
    assert_eq!(vm["metadata"]["name"], "cyberdesk-alice");
    assert_eq!(vm["metadata"]["labels"]["app"], "cyberdesk");
    assert_eq!(vm["metadata"]["labels"]["team"], "x");
    assert!(vm["metadata"].get("uid").is_none());
    assert!(vm["spec"].get("running").is_none());
    assert_eq!(vm["spec"]["runStrategy"], "Always");
    assert!(vm.get("status").is_none());
    assert_eq!(
        vm["spec"]["template"]["metadata"]["labels"]["cyberdesk-instance"],
        "alice"
    );
}

#[test]
fn unknown_and_broken_variables_are_errors() {
    let unknown = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec: {hostname: '${owner}'}\n";
    assert_eq!(
        parse(unknown),
        Err(TemplateError::UnknownVariable {
            name: "owner".into(),
            path: "spec.template.spec.hostname".into()
        })
    );
    let open =
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {template: {x: ['${vm_name']}}\n";
    assert!(
        matches!(parse(open), Err(TemplateError::BadReference { path }) if path == "spec.template.x[0]")
    );
    let empty = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {template: {x: '${}'}}\n";
    assert!(matches!(
        parse(empty),
        Err(TemplateError::BadReference { .. })
    ));
}

#[test]
fn wrong_documents_are_errors() {
    assert!(matches!(parse("{{{"), Err(TemplateError::Yaml(_))));
    assert!(matches!(
        parse("apiVersion: v1\nkind: Pod\n"),
        Err(TemplateError::WrongKind { .. })
    ));
    assert!(matches!(
        parse("- a\n- b\n"),
        Err(TemplateError::WrongKind { .. })
    ));
    assert_eq!(
        parse("apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {}\n"),
        Err(TemplateError::NoVmiTemplate)
    );
}

#[test]
fn values_cannot_inject_structure() {
    let t = parse(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec:\n      domain: {devices: {}}\n      volumes:\n      - name: cloudinit\n        cloudInitNoCloud: {userDataBase64: '${user_data_base64}'}\n",
    )
    .expect("parses");
    let mut v = vars();
    // YAML that would add keys and a list item if it were spliced into the text.
    let hostile = "x\nspec: {evil: true}\n- name: injected\n  cloudInitNoCloud: {}";
    v.user_data_base64 = hostile.into();
    let vm = render(&t, &v, &ownership()).expect("renders");
    let volumes = &vm["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["cloudInitNoCloud"]["userDataBase64"], hostile);
    assert_eq!(volumes.as_array().map(Vec::len), Some(1), "{vm}");
    assert!(vm["spec"].get("evil").is_none(), "{vm}");
}
