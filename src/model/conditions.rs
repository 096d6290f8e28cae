//! Conditions in the shape of `metav1.Condition`, plus the helpers that keep
//! `lastTransitionTime` honest (it moves only when the status flips).

use compact_str::CompactString;
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

// `CompactString`s: the type, reason and time fit inline, so a cached desk's conditions
// cost no allocations but their messages.
/// One observation about a Cyberdesk (`metav1.Condition` shape).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Kind of condition: Ready, VirtualMachineCreated, TimedOut or TemplateValid.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub type_: CompactString,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the last transition.
    #[schemars(with = "String")]
    pub reason: CompactString,
    /// Human-readable details.
    #[serde(default)]
    #[schemars(with = "String")]
    pub message: CompactString,
    /// When the status last changed (RFC 3339).
    #[schemars(with = "String")]
    pub last_transition_time: CompactString,
    /// The .metadata.generation this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// When, and for which `.metadata.generation`, a pass observed the conditions it sets:
/// every condition of one status carries the same stamp.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub now: Timestamp,
    pub generation: Option<i64>,
}

impl Observed {
    /// The one way a condition is made.
    pub fn condition(
        &self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<CompactString>,
    ) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: crate::time::format(self.now).into(),
            observed_generation: self.generation,
        }
    }
}

pub const READY: &str = "Ready";
pub const VM_CREATED: &str = "VirtualMachineCreated";
pub const TIMED_OUT: &str = "TimedOut";
pub const TEMPLATE_VALID: &str = "TemplateValid";

/// Sets `new` in `conditions`, keeping the old `lastTransitionTime` when the status did not
/// change, so a pass that observes nothing new produces an identical status.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests;
