//! `cyberdesk-operator certs --out DIR`: a CA and serving leaf written as files, for local
//! runs and the files mode.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::certs::bundle::{
    CertError, CertOptions, KEY_CA_CERT, KEY_CA_KEY, KEY_TLS_CERT, KEY_TLS_KEY,
};
use crate::certs::issue::{generate_ca_at, issue_serving_at};

/// `cyberdesk-operator certs --out DIR`: a CA and serving leaf for local runs and the
/// files mode. Keys are written owner-only.
pub fn write_local_certs(dir: &Path, sans: &[String]) -> Result<Vec<PathBuf>, CertError> {
    let opts = CertOptions::default();
    let now = SystemTime::now();
    let (ca_cert, ca_key) = generate_ca_at(now, &opts)?;
    let (cert, key) = issue_serving_at(&ca_cert, &ca_key, sans, now, &opts)?;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (file, contents, private) in [
        (KEY_CA_CERT, &ca_cert, false),
        (KEY_CA_KEY, &ca_key, true),
        (KEY_TLS_CERT, &cert, false),
        (KEY_TLS_KEY, &key, true),
    ] {
        let path = dir.join(file);
        write_file(&path, contents.as_bytes(), private).map_err(|source| CertError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let file = options.open(path)?;
        // `mode` only applies to new files; tighten one that was already there.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        write_all(file, contents)
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        write_all(options.open(path)?, contents)
    }
}

fn write_all(mut file: std::fs::File, contents: &[u8]) -> std::io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}
