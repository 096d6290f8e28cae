//! The platform's state table in Supabase (PostgREST): which state a desk is in for the
//! platform, and the request that writes it (pure).
//!
//! The platform keeps `cyberdesk_instances` (`id` = desk name, `status` = pending, running,
//! terminated or error). The operator writes pending, terminated and error; `running` is
//! the gateway's to set, after the ready call.

use hyper::Method;

use crate::model::{CyberdeskPhase, CyberdeskStatus};
use crate::notify::http::Outgoing;

/// The table the platform keeps its desks in.
pub const TABLE: &str = "cyberdesk_instances";

/// Where to write, and with which key.
#[derive(Clone)]
pub struct Supabase {
    /// The project URL, without a trailing `/`.
    url: String,
    key: SecretKey,
}

/// The service key: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl std::str::FromStr for SecretKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for Supabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supabase")
            .field("url", &self.url)
            .field("key", &self.key)
            .finish()
    }
}

impl Supabase {
    /// `url` must be http(s); the key must not be empty.
    pub fn new(url: &str, key: SecretKey) -> Result<Self, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("SUPABASE_URL must start with https:// (or http://)".into());
        }
        url.parse::<hyper::Uri>()
            .map_err(|e| format!("SUPABASE_URL is not a URL: {e}"))?;
        if key.0.trim().is_empty() {
            return Err("SUPABASE_KEY is empty".into());
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// `PATCH /rest/v1/cyberdesk_instances?id=eq.<desk>` with `{"status": <state>}`.
    pub fn request(&self, desk: &str, state: &str) -> Outgoing {
        Outgoing {
            method: Method::PATCH,
            url: format!("{}/rest/v1/{TABLE}?id=eq.{desk}", self.url),
            headers: vec![
                ("apikey", self.key.0.clone()),
                ("authorization", format!("Bearer {}", self.key.0)),
                ("content-type", "application/json".into()),
                ("prefer", "return=minimal".into()),
            ],
            body: serde_json::json!({ "status": state })
                .to_string()
                .into_bytes(),
        }
    }
}

/// The platform's state for a desk with this status; `None` when it says nothing new (a
/// desk being deleted: whoever deletes it tells the platform).
pub fn platform_state(status: &CyberdeskStatus) -> Option<&'static str> {
    match status.phase? {
        CyberdeskPhase::TimedOut => Some("terminated"),
        CyberdeskPhase::Terminating => None,
        CyberdeskPhase::Failed => Some("error"),
        _ => match status.vmi_phase.as_deref() {
            Some("Succeeded") => Some("terminated"),
            Some("Failed" | "Unknown") => Some("error"),
            _ => Some("pending"),
        },
    }
}

#[cfg(test)]
mod tests;
