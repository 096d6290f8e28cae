//! rustls server config and a cert resolver that swaps certificates in place. STUB: being written.
