//! Runs the kubectl built with the control plane, as a user would type it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one kubectl invocation printed.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    /// stdout on success, a readable error otherwise.
    pub fn ok(self) -> Result<String, String> {
        if self.success {
            Ok(self.stdout)
        } else {
            Err(format!("kubectl failed: {}{}", self.stderr, self.stdout))
        }
    }
}

#[derive(Clone, Debug)]
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    /// `--as`/`--as-group` flags added to every invocation (empty: act as the kubeconfig's user).
    impersonate: Vec<String>,
}

impl Kubectl {
    pub fn new(binary: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            kubeconfig: kubeconfig.into(),
            impersonate: Vec::new(),
        }
    }

    /// The same kubectl acting as `user` in `groups` (`--as`, `--as-group`), so tenant tests
    /// see what RBAC lets that user do. The kubeconfig's user must be allowed to impersonate
    /// (the admin one is).
    pub fn as_user(&self, user: &str, groups: &[&str]) -> Self {
        let mut impersonate = vec![format!("--as={user}")];
        impersonate.extend(groups.iter().map(|g| format!("--as-group={g}")));
        Self {
            impersonate,
            ..self.clone()
        }
    }

    /// The kubectl binary (for tools that shell out to it, such as `make release-manifests`).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kubectl ARGS` with `stdin` piped in (for `apply -f -`).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> std::io::Result<KubectlOutput> {
        let mut child = Command::new(&self.binary)
            .args(&self.impersonate)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok(KubectlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `kubectl apply -f -` of a YAML/JSON document.
    pub fn apply(&self, manifest: &str, extra: &[&str]) -> std::io::Result<KubectlOutput> {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.run(&args, Some(manifest))
    }
}
