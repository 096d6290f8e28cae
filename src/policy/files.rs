//! Policies from files: a folder of `*.json` documents (`--policy-dir`, a ConfigMap volume)
//! and `cyberdesk-operator policy check`.

use std::path::{Path, PathBuf};

use super::{Policy, PolicyError, PolicyErrorReason, PolicySet};

/// Every `*.json` file in `dir` as (path, bytes), sorted by file name. A missing folder is
/// no policies, not an error: file policies are optional. Dotfiles are skipped (editor
/// leftovers; ConfigMap mounts keep their internals under `..data`).
pub fn load_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(with_path(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| with_path(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks, which is how ConfigMap volumes present their keys.
        if std::fs::metadata(&path)
            .map_err(|e| with_path(&path, e))?
            .is_file()
        {
            files.push((name.to_string(), path));
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, path)| {
            let bytes = std::fs::read(&path).map_err(|e| with_path(&path, e))?;
            Ok((path.display().to_string(), bytes))
        })
        .collect()
}

fn with_path(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `cyberdesk-operator policy check FILE...`: loads the files (a folder stands for its
/// `*.json` files) as one set, as the operator would, and returns one line per policy.
pub fn check_files(paths: &[PathBuf]) -> Result<Vec<String>, Vec<PolicyError>> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let origin = path.display().to_string();
        if path.is_dir() {
            match load_dir(path) {
                Ok(found) => sources.extend(found),
                Err(e) => errors.push(PolicyError::new(&origin, None, PolicyErrorReason::Read(e))),
            }
            continue;
        }
        match std::fs::read(path) {
            Ok(bytes) => sources.push((origin, bytes)),
            Err(e) => errors.push(PolicyError::new(&origin, None, PolicyErrorReason::Read(e))),
        }
    }
    match PolicySet::load(&sources) {
        Ok(set) if errors.is_empty() => Ok(set.policies.iter().map(Policy::summary).collect()),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}
