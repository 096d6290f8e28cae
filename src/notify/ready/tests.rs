use super::*;

#[test]
fn the_gateway_url_takes_the_desk_name() {
    let url =
        ReadyUrl::parse("http://gateway.cyberdesk-system.svc.cluster.local/cyberdesk/{name}/ready")
            .expect("valid");
    assert_eq!(
        url.for_desk("cyberdesk-system", "0b7e4c1a"),
        "http://gateway.cyberdesk-system.svc.cluster.local/cyberdesk/0b7e4c1a/ready"
    );
    let both = ReadyUrl::parse("https://h/{namespace}/{name}").expect("valid");
    assert_eq!(both.for_desk("ns", "d"), "https://h/ns/d");
}

#[test]
fn bad_templates_are_refused() {
    assert!(ReadyUrl::parse("gateway/{name}").is_err());
    assert!(ReadyUrl::parse("http://h/{id}").is_err());
    assert!(ReadyUrl::parse("http://h /x").is_err());
}
