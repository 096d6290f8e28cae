//! Values the shipped manifests must share with the code.

/// The base install runs the image of the release this tree is: `images[].newTag` in
/// manifests/base/kustomization.yaml is the crate's version.
#[test]
fn base_image_tag_is_the_crate_version() {
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../manifests/base/kustomization.yaml"))
            .expect("kustomization.yaml parses");
    let images = kustomization["images"]
        .as_sequence()
        .expect("kustomization.yaml has images:");
    let operator = images
        .iter()
        .find(|i| i["name"].as_str() == Some("ghcr.io/cyberdesk/cyberdesk-operator"))
        .expect("an images: entry for the operator");
    assert_eq!(
        operator["newTag"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "bump newTag in manifests/base/kustomization.yaml with Cargo.toml's version"
    );
}

/// The Deployment names the image without a tag, so nothing but `images:` picks it.
#[test]
fn deployment_image_has_no_tag_of_its_own() {
    let deployment: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../manifests/base/deployment.yaml"))
            .expect("deployment.yaml parses");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("the operator container's image");
    assert_eq!(image, "ghcr.io/cyberdesk/cyberdesk-operator");
}
