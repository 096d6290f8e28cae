//! Certificates: rcgen CA and serving leaf, the TLS Secret, rotation. STUB: being written.
