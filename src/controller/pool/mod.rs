//! The warm-pool controller: keeps every CyberdeskPool at its size (`reconcile.rs`, with
//! the pure decisions of `plan.rs` and its own recent writes in `writes.rs`), and the
//! desk's claim of a pool VM (`claim.rs`).

pub mod claim;
pub mod context;
pub mod plan;
pub mod reconcile;
pub mod writes;
