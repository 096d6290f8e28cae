//! JSON Schema policies (pure + a hot-swappable store). STUB: being written.

/// A compiled, immutable set of policies.
#[derive(Debug, Default)]
pub struct PolicySet {}
