//! The Events the controllers publish about desks: each reason with its meaning, its
//! action verb and its type in one place.

use kube::runtime::events::{Event, EventType};

/// Condition and event reason of a desk outside `--desk-namespaces`.
pub const NOT_SERVED: &str = "NamespaceNotServed";

/// Event reasons the reconciler publishes, each with its meaning in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    VirtualMachineCreated,
    VirtualMachineClaimed,
    VirtualMachineAdopted,
    VirtualMachineConflict,
    TimedOut,
    /// A timed-out desk's VM was started again (by hand) and halted again: not a timeout.
    TimeoutReapplied,
    Ready,
    Deleting,
    DeletingVirtualMachine,
    CleanedUp,
    TemplateInvalid,
    TemplateNotAllowed,
    UserDataUnavailable,
    CreateRejected,
    NamespaceNotServed,
}

impl Reason {
    /// Every reason, in the order the README's events table lists them.
    pub const ALL: [Reason; 14] = [
        Reason::VirtualMachineCreated,
        Reason::VirtualMachineClaimed,
        Reason::Ready,
        Reason::TimedOut,
        Reason::TimeoutReapplied,
        Reason::Deleting,
        Reason::DeletingVirtualMachine,
        Reason::CleanedUp,
        Reason::TemplateInvalid,
        Reason::TemplateNotAllowed,
        Reason::UserDataUnavailable,
        Reason::CreateRejected,
        Reason::VirtualMachineConflict,
        Reason::VirtualMachineAdopted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::VirtualMachineCreated => "VirtualMachineCreated",
            Reason::VirtualMachineClaimed => "VirtualMachineClaimed",
            Reason::VirtualMachineAdopted => "VirtualMachineAdopted",
            Reason::VirtualMachineConflict => "VirtualMachineConflict",
            Reason::TimedOut => "TimedOut",
            Reason::TimeoutReapplied => "TimeoutReapplied",
            Reason::Ready => "Ready",
            Reason::Deleting => "Deleting",
            Reason::DeletingVirtualMachine => "DeletingVirtualMachine",
            Reason::CleanedUp => "CleanedUp",
            Reason::TemplateInvalid => "TemplateInvalid",
            Reason::TemplateNotAllowed => "TemplateNotAllowed",
            Reason::UserDataUnavailable => "UserDataUnavailable",
            Reason::CreateRejected => "CreateRejected",
            Reason::NamespaceNotServed => NOT_SERVED,
        }
    }

    /// The action verb of the Kubernetes Event.
    pub fn action(self) -> &'static str {
        match self {
            Reason::TimedOut | Reason::TimeoutReapplied => "Stop",
            Reason::Ready | Reason::VirtualMachineClaimed => "Start",
            Reason::Deleting | Reason::DeletingVirtualMachine | Reason::CleanedUp => "Delete",
            _ => "Create",
        }
    }

    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::VirtualMachineConflict
                | Reason::TemplateInvalid
                | Reason::TemplateNotAllowed
                | Reason::UserDataUnavailable
                | Reason::CreateRejected
                | Reason::NamespaceNotServed
        )
    }
}

/// One Event to publish about the desk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub reason: Reason,
    pub note: String,
}

impl Announcement {
    pub fn new(reason: Reason, note: impl Into<String>) -> Self {
        Self {
            reason,
            note: note.into(),
        }
    }
}

impl Announcement {
    /// The Kubernetes Event this announcement is published as.
    pub fn event(self) -> Event {
        let reason = self.reason;
        Event {
            type_: if reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.as_str().into(),
            note: Some(self.note),
            action: reason.action().into(),
            secondary: None,
        }
    }
}
