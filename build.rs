//! Records the git commit the binary is built from, for `cyberdesk_build_info{revision}`.
//! Outside a git checkout (a source tarball, a Docker build without .git) it is "unknown",
//! or whatever CYBERDESK_REVISION says.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CYBERDESK_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let revision = std::env::var("CYBERDESK_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CYBERDESK_REVISION={revision}");
}
