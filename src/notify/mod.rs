//! Telling the platform about desks, off the reconcile path: the ready call
//! (`--ready-url`) and the platform's state table (the Supabase sink). Each delivery is
//! retried with backoff, bounded per attempt, and recorded in the desk's
//! `status.notifications` once it succeeded or was given up, so a restart or another
//! leader does not repeat it, and does make it when it never happened.

pub mod http;
mod notifier;
pub mod ready;
pub mod retry;
pub mod supabase;

pub use notifier::{Notifier, NotifierConfig};
