//! A missing binary, a busy port or a crashing apiserver give an error that says what and
//! how to fix it, and leave no etcd or kube-apiserver behind.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cyberdesk_integration::controlplane::{
    ControlPlane, Error, Options, default_bin_dir, pid_alive,
};
use cyberdesk_integration::wait::{blocking, holds};

/// Processes whose command line mentions `needle` (e.g. a control plane's work dir).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

fn real_bin(name: &str) -> std::path::PathBuf {
    let path = default_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} missing: run `make controlplane` first",
        path.display()
    );
    path
}

#[test]
fn missing_binary_names_it_and_the_fix() {
    let empty = std::env::temp_dir().join(format!("cyberdesk-empty-bin-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("mkdir");
    let opts = Options {
        bin_dir: empty.clone(),
        ..Options::default()
    };
    let err = ControlPlane::start(&opts).expect_err("must fail without binaries");
    assert!(
        matches!(
            err,
            Error::BinaryMissing {
                name: "kube-apiserver",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("make controlplane"), "{text}");
    assert!(text.contains(&empty.display().to_string()), "{text}");
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn busy_port_is_reported_before_anything_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let opts = Options {
        apiserver_port: Some(port),
        ..Options::default()
    };
    let err = ControlPlane::start(&opts).expect_err("must fail on a busy port");
    assert!(
        matches!(err, Error::PortInUse { port: p, .. } if p == port),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()));
    assert!(processes_mentioning(&format!("--secure-port={port}")).is_empty());
}

#[test]
fn crashing_apiserver_shows_its_log_and_stops_etcd() {
    // A bin dir with the real etcd and kubectl but an apiserver that dies at once.
    let bin = std::env::temp_dir().join(format!("cyberdesk-crash-bin-{}", std::process::id()));
    std::fs::create_dir_all(&bin).expect("mkdir");
    for name in ["etcd", "kubectl"] {
        let _ = std::fs::remove_file(bin.join(name));
        std::os::unix::fs::symlink(real_bin(name), bin.join(name)).expect("symlink");
    }
    let fake = bin.join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'E0101 fake failure: unknown flag --oops' >&2\nexit 3\n",
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let err = ControlPlane::start(&Options {
        bin_dir: bin.clone(),
        ..Options::default()
    })
    .expect_err("must fail");
    let Error::Exited {
        name, log, tail, ..
    } = &err
    else {
        panic!("unexpected error: {err:?}")
    };
    assert_eq!(*name, "kube-apiserver");
    assert!(tail.contains("fake failure"), "{tail}");
    assert!(err.to_string().contains("fake failure"));
    // etcd was started for this attempt; it must be gone, and so must the work dir.
    let work_dir = log.parent().expect("log in work dir");
    assert!(
        processes_mentioning(&work_dir.display().to_string()).is_empty(),
        "etcd left running"
    );
    assert!(!work_dir.exists(), "work dir left behind");
    let _ = std::fs::remove_dir_all(bin);
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    blocking(holds(within, || {
        // A reaped or zombie-free pid is gone; zombies of a dead parent are reaped by init.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !pid_alive(pid) || state.split_whitespace().nth(2) == Some("Z")
    }))
}

#[test]
fn children_die_with_their_parent() {
    use std::io::{BufRead, BufReader};
    let exe = Path::new(env!("CARGO_BIN_EXE_cyberdesk-cluster"));
    let mut parent = Command::new(exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cluster");
    let stdout = parent.stdout.take().expect("stdout");
    let mut pids = None;
    let mut work_dir = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read line");
        if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
            work_dir = Path::new(path).parent().map(Path::to_path_buf);
        }
        if let Some(rest) = line.strip_prefix("pids: ") {
            let nums: Vec<u32> = rest
                .split(' ')
                .filter_map(|kv| kv.split_once('=')?.1.parse().ok())
                .collect();
            pids = Some(nums);
        }
        if line.starts_with("export KUBECONFIG=") {
            break;
        }
    }
    let pids = pids.expect("cluster printed its children's pids");
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| pid_alive(*p)));
    parent.kill().expect("SIGKILL the launcher");
    let _ = parent.wait();
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "child {pid} outlived its parent"
        );
    }
    // SIGKILL gave the launcher no chance to clean up its work dir; do it for it.
    if let Some(dir) = work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
