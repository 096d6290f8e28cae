//! The workspace the tests run from: the `cyberdesk-operator` binary (built if needed),
//! its one-shot commands, and paths to the repository's shipped files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The operator binary of this workspace (debug profile), built once per test binary;
/// `CYBERDESK_OPERATOR_BIN` points at another build (the benchmarks use release).
pub fn operator_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CYBERDESK_OPERATOR_BIN") {
            return Ok(PathBuf::from(bin));
        }
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // A no-op when `cargo test --workspace` already built it.
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "cyberdesk-operator",
                "--bin",
                "cyberdesk-operator",
            ])
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build of cyberdesk-operator failed: {status}"
            ));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(target.join("debug").join("cyberdesk-operator"))
    });
    match result {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Output of `cyberdesk-operator ARGS`.
pub fn operator_output(args: &[&str]) -> std::process::Output {
    Command::new(operator_binary())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run cyberdesk-operator")
}

/// `rel` in this repository (an absolute path stays as it is).
pub fn repo_path(rel: impl AsRef<Path>) -> PathBuf {
    workspace_root().join(rel)
}
