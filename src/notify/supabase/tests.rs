use super::*;

fn status(phase: CyberdeskPhase, vmi: Option<&str>) -> CyberdeskStatus {
    CyberdeskStatus {
        phase: Some(phase),
        vmi_phase: vmi.map(Into::into),
        ..Default::default()
    }
}

#[test]
fn vmi_phases_map_to_the_platforms_states() {
    use CyberdeskPhase::*;
    for (phase, vmi, want) in [
        (Pending, None, Some("pending")),
        (Provisioning, None, Some("pending")),
        (Starting, Some("Scheduling"), Some("pending")),
        (Starting, Some("Scheduled"), Some("pending")),
        (Running, Some("Running"), Some("pending")),
        (Stopping, Some("Succeeded"), Some("terminated")),
        (Failed, Some("Failed"), Some("error")),
        (Starting, Some("Unknown"), Some("error")),
        (Failed, None, Some("error")),
        (TimedOut, Some("Running"), Some("terminated")),
        (TimedOut, None, Some("terminated")),
        (Terminating, Some("Running"), None),
    ] {
        assert_eq!(
            platform_state(&status(phase, vmi)),
            want,
            "{phase:?} {vmi:?}"
        );
    }
    assert_eq!(platform_state(&CyberdeskStatus::default()), None);
}

#[test]
fn the_request_is_a_postgrest_patch_by_id() {
    let s = Supabase::new("https://p.supabase.co/", SecretKey("k3y".into())).expect("valid");
    let r = s.request("0b7e4c1a", "terminated");
    assert_eq!(r.method, Method::PATCH);
    assert_eq!(
        r.url,
        "https://p.supabase.co/rest/v1/cyberdesk_instances?id=eq.0b7e4c1a"
    );
    let header = |n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("apikey"), Some("k3y"));
    assert_eq!(header("authorization"), Some("Bearer k3y"));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        r#"{"status":"terminated"}"#
    );
}

#[test]
fn the_key_never_prints_and_bad_settings_are_refused() {
    let s = Supabase::new("https://p.supabase.co", SecretKey("k3y".into())).expect("valid");
    assert!(!format!("{s:?}").contains("k3y"));
    assert!(Supabase::new("p.supabase.co", SecretKey("k".into())).is_err());
    assert!(Supabase::new("https://p.supabase.co", SecretKey(" ".into())).is_err());
}
