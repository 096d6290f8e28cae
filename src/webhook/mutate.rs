//! Defaulting on CREATE (pure). STUB: being written.

/// Settings the mutating webhook needs.
#[derive(Clone, Debug)]
pub struct MutateConfig {
    pub default_timeout_ms: i64,
}

/// The minimal JSONPatch that defaults `spec.timeoutMs`, `spec.timeoutAction` and adds the
/// finalizer to `object` (a Cyberdesk as raw JSON). Empty when nothing is missing or the
/// object is being deleted.
pub fn defaults_patch(object: &serde_json::Value, cfg: &MutateConfig) -> json_patch::Patch {
    let _ = (object, cfg);
    json_patch::Patch(Vec::new())
}
