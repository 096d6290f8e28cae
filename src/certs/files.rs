//! Files mode: serve a mounted tls.crt/tls.key (cert-manager, `make certs`) and reload it
//! when it changes. Contents are compared, not mtimes: a Secret volume updates by swapping
//! a symlink, which leaves the files' own mtimes alone.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::certs::bundle::CertError;
use crate::certs::tls::{self, CertResolver};
use crate::metrics::Metrics;

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The watched pair and a fingerprint of the contents last looked at (loaded or refused),
/// so a broken pair is reported once, not every poll.
#[derive(Debug)]
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    seen: u64,
    last_read_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Unchanged,
    Reloaded { not_after: i64 },
}

fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

fn as_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, CertError> {
    std::str::from_utf8(bytes).map_err(|_| CertError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl CertFiles {
    /// Parses the pair and, only if it is usable, serves it.
    fn install(
        &self,
        cert: &[u8],
        key: &[u8],
        resolver: &CertResolver,
        metrics: &Metrics,
    ) -> Result<i64, CertError> {
        let load_error = |source| CertError::LoadFiles {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            source,
        };
        let cert_text = as_text(&self.cert_path, cert)?;
        let key_text = as_text(&self.key_path, key)?;
        let certified = tls::certified_key_from_pem(cert_text, key_text).map_err(load_error)?;
        let not_after = tls::cert_not_after(cert_text).map_err(load_error)?;
        resolver.swap(Arc::new(certified));
        metrics.cert_expiry.set(not_after as f64);
        Ok(not_after)
    }

    /// Reads the files again and serves them if their contents changed. A pair that does
    /// not load (half-written, key and cert from different rotations) leaves the previous
    /// certificate in place and is returned as the error.
    pub async fn poll(
        &mut self,
        resolver: &CertResolver,
        metrics: &Metrics,
    ) -> Result<PollOutcome, CertError> {
        let cert = tokio::fs::read(&self.cert_path)
            .await
            .map_err(io_error(&self.cert_path))?;
        let key = tokio::fs::read(&self.key_path)
            .await
            .map_err(io_error(&self.key_path))?;
        let fp = fingerprint(&cert, &key);
        if fp == self.seen {
            return Ok(PollOutcome::Unchanged);
        }
        self.seen = fp;
        let not_after = self.install(&cert, &key, resolver, metrics)?;
        Ok(PollOutcome::Reloaded { not_after })
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// Loads the pair at start-up and serves it. The caller refuses to start on error; the
/// message names both paths.
pub fn load_files(
    cert_path: &Path,
    key_path: &Path,
    resolver: &CertResolver,
    metrics: &Metrics,
) -> Result<CertFiles, CertError> {
    let cert = std::fs::read(cert_path).map_err(io_error(cert_path))?;
    let key = std::fs::read(key_path).map_err(io_error(key_path))?;
    let files = CertFiles {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        seen: fingerprint(&cert, &key),
        last_read_error: None,
    };
    let not_after = files.install(&cert, &key, resolver, metrics)?;
    info!(cert = %cert_path.display(), key = %key_path.display(), not_after, "webhook serving certificate loaded from files");
    Ok(files)
}

/// Polls the files every `poll_interval` until `shutdown`, swapping in changed contents.
pub async fn run_files(
    mut files: CertFiles,
    resolver: Arc<CertResolver>,
    metrics: Metrics,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll_interval) => {}
        }
        match files.poll(&resolver, &metrics).await {
            Ok(PollOutcome::Unchanged) => {
                files.last_read_error = None;
            }
            Ok(PollOutcome::Reloaded { not_after }) => {
                files.last_read_error = None;
                info!(cert = %files.cert_path.display(), not_after, "webhook serving certificate reloaded from files");
            }
            // Missing or unreadable during a volume update: say so once per distinct error.
            Err(e @ CertError::Io { .. }) => {
                let message = e.to_string();
                if files.last_read_error.as_deref() == Some(message.as_str()) {
                    debug!(error = %message, "certificate files still unreadable");
                } else {
                    warn!(error = %message, "cannot read the certificate files; still serving the previous certificate");
                    files.last_read_error = Some(message);
                }
            }
            Err(e) => {
                files.last_read_error = None;
                warn!(error = %e, "refusing changed certificate files; still serving the previous certificate");
            }
        }
    }
}
