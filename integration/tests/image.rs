//! The image a cluster runs (`make image`), run the way the shipped Deployment runs it: the
//! rendered base Deployment's args, env, user, read-only root, dropped capabilities, limits
//! and volumes, the ServiceAccount's token, CA and namespace where a projected volume puts
//! them, in-cluster config pointed at the test apiserver, host network. Its probes answer as
//! the kubelet asks them, the apiserver's admission calls reach the webhook inside it, a
//! desk gets its VM, SIGTERM ends it with 0 within the grace period, and it has no shell.
//! And the release's builder stage: the operator builds from a copy of exactly the paths
//! `image/binaries.Dockerfile` copies.
//!
//! Needs podman and runc (`make tools`, as root) and the image (`make image`; `make test`
//! builds it first). Without them the tests fail and say so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, apply, cluster, install_everything};
use cyberdesk_integration::desks::{desk_namespace, desk_yaml};
use cyberdesk_integration::image::{
    HttpProbe, PodRun, Podman, SERVICE_ACCOUNT_DIR, image_name, kubelet_probe, run_limits,
};
use cyberdesk_integration::kubevirt::SimulatorOptions;
use cyberdesk_integration::operator::{free_addr, register_webhooks};
use cyberdesk_integration::overlay::render;
use cyberdesk_integration::wait::{eventually, until};
use cyberdesk_integration::workspace::repo_path;
use serde_yaml::Value;

/// The pod name the kubelet would give `metadata.name` (POD_NAME, the Lease identity).
const POD_NAME: &str = "cyberdesk-operator-image-test";

fn podman() -> Podman {
    Podman::from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// The image `make image` built; a clear failure when it was not built.
fn built_image(podman: &Podman) -> String {
    let image = image_name();
    let exists = podman
        .output(&["image", "exists", &image])
        .is_ok_and(|o| o.status.success());
    assert!(
        exists,
        "no image {image}: build it with `make image` (`make test` does that first)"
    );
    image
}

/// A container removed (with `podman rm -f`) when the test ends, however it ends.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Container<'_> {
    fn logs(&self) -> String {
        self.podman
            .output(&["logs", &self.name])
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    /// `(status, exit code)` as podman reports them.
    fn state(&self) -> (String, i64) {
        let out = self
            .podman
            .ok(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                &self.name,
            ])
            .unwrap_or_default();
        let mut words = out.split_whitespace();
        let status = words.next().unwrap_or_default().to_string();
        let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
        (status, code)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.output(&["rm", "-f", "-t", "0", &self.name]);
    }
}

fn deployment(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some("Deployment"))
        .expect("manifests/base renders a Deployment")
}

/// What a projected ServiceAccount volume holds for `run`'s ServiceAccount: a token from
/// the TokenRequest API, the apiserver's CA and the namespace; owned by root with the pod's
/// fsGroup, mode 0640, as the kubelet writes them when the pod sets fsGroup (run as root).
fn service_account_files(c: &Cluster, run: &PodRun) -> PathBuf {
    let token = c
        .kubectl()
        .run(
            &[
                "create",
                "token",
                &run.service_account,
                "-n",
                &run.namespace,
                "--duration=1h",
            ],
            None,
        )
        .expect("kubectl")
        .ok()
        .expect("kubectl create token");
    let dir = c.dir.join("image-serviceaccount");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ca = std::fs::read_to_string(c.dir.join("ca.crt")).expect("the control plane's CA");
    for (file, content) in [
        ("token", token.trim()),
        ("ca.crt", ca.as_str()),
        ("namespace", run.namespace.as_str()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, content).expect("write");
        // Only root can give a file away; anyone else leaves it readable to all.
        let mode = match std::os::unix::fs::chown(&path, Some(0), run.fs_group) {
            Ok(()) if run.fs_group.is_some() => 0o640,
            _ => 0o644,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// The port a flag's default listens on, from the image's own `run --help`.
fn default_port(help: &str, flag: &str) -> Option<u16> {
    let start = help.find(&format!("{flag} "))?;
    let rest = &help[start..];
    let end = rest[flag.len()..]
        .find("\n  -")
        .map_or(rest.len(), |i| i + flag.len());
    let text = &rest[..end];
    let default = &text[text.find("[default: ")? + "[default: ".len()..];
    default[..default.find(']')?]
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

fn git_revision() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_path("."))
        .output()
        .expect("git");
    assert!(out.status.success(), "git rev-parse failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `revision` label of `cyberdesk_build_info` in a scrape.
fn build_revision(metrics: &str) -> Option<String> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("cyberdesk_build_info{"))?;
    let rest = &line[line.find("revision=\"")? + "revision=\"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_the_deployment_runs_it() {
    let podman = podman();
    let image = built_image(&podman);
    let c = cluster();
    install_everything(&c).await;
    let objects = render(&c, "manifests/base");
    let run = PodRun::from_deployment(deployment(&objects)).unwrap_or_else(|e| panic!("{e}"));
    // The base's policies, as the install applies them: the webhook must deny by them.
    let policies = objects
        .iter()
        .find(|o| {
            o["kind"].as_str() == Some("ConfigMap")
                && o["metadata"]["name"].as_str() == Some("cyberdesk-policies")
        })
        .expect("the base renders the cyberdesk-policies ConfigMap");
    apply(&c, &serde_yaml::to_string(policies).expect("YAML"));

    // Host network shares the machine's ports, so each container port is moved to a free
    // one, as a pod network would give the pod its own. Only the port moves: the image's
    // own defaults must be the Deployment's container ports.
    let mut help_args = vec!["run".to_string(), "--rm".into(), "--network=none".into()];
    help_args.extend(run_limits());
    help_args.extend([image.clone(), "run".into(), "--help".into()]);
    let help_refs: Vec<&str> = help_args.iter().map(String::as_str).collect();
    let help = podman.ok(&help_refs).unwrap_or_else(|e| panic!("{e}"));
    let webhook = free_addr();
    let admin = free_addr();
    for (name, flag) in [("webhook", "--webhook-addr"), ("admin", "--admin-addr")] {
        assert_eq!(
            default_port(&help, flag),
            run.ports.get(name).copied(),
            "{flag}'s default port is not the Deployment's containerPort {name}:\n{help}"
        );
    }
    let host_port = |container_port: u16| -> u16 {
        if Some(&container_port) == run.ports.get("webhook") {
            webhook.port()
        } else if Some(&container_port) == run.ports.get("admin") {
            admin.port()
        } else {
            panic!("container port {container_port} is neither webhook nor admin")
        }
    };

    // The apiserver calls the webhook at 127.0.0.1 (no Service here), so the serving
    // certificate names it too, and both configurations exist before the operator starts.
    register_webhooks(&c, webhook).unwrap_or_else(|e| panic!("{e}"));
    let sa_dir = service_account_files(&c, &run);
    let api_port = c
        .apiserver_url
        .rsplit(':')
        .next()
        .expect("apiserver port")
        .to_string();
    let mut env = run.env_values(POD_NAME).unwrap_or_else(|e| panic!("{e}"));
    env.extend([
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "127.0.0.1".to_string(),
        ),
        ("KUBERNETES_SERVICE_PORT".to_string(), api_port),
        (
            "CYBERDESK_WEBHOOK_ADDR".to_string(),
            format!("0.0.0.0:{}", webhook.port()),
        ),
        (
            "CYBERDESK_ADMIN_ADDR".to_string(),
            format!("0.0.0.0:{}", admin.port()),
        ),
        ("CYBERDESK_EXTRA_SANS".to_string(), "127.0.0.1".to_string()),
    ]);

    let name = format!("cyberdesk-image-test-{}", std::process::id());
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        format!("--name={name}"),
        "--network=host".into(),
        format!("--volume={}:{SERVICE_ACCOUNT_DIR}:ro", sa_dir.display()),
    ];
    args.extend(run_limits());
    args.extend(run.podman_options());
    args.extend(env.iter().map(|(k, v)| format!("--env={k}={v}")));
    args.push(image.clone());
    args.extend(run.args.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let container = Container {
        podman: &podman,
        name: name.clone(),
    };
    podman.ok(&arg_refs).unwrap_or_else(|e| panic!("{e}"));

    // The probes, asked as the kubelet asks them: the startup probe first, then liveness and
    // readiness.
    assert!(
        run.probes.iter().any(|p| p.kind == "livenessProbe")
            && run.probes.iter().any(|p| p.kind == "readinessProbe"),
        "the Deployment has no liveness or readiness probe: {:?}",
        run.probes
    );
    for probe in &run.probes {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], host_port(probe.port)));
        let answered = until(Duration::from_secs(60), || {
            let probe: HttpProbe = probe.clone();
            async move {
                kubelet_probe(addr, &probe)
                    .ok()
                    .filter(|s| (200..400).contains(s))
            }
        })
        .await;
        assert!(
            answered.is_some(),
            "{} GET {} on port {} never succeeded; container {:?}, log:\n{}",
            probe.kind,
            probe.path,
            probe.port,
            container.state(),
            container.logs()
        );
    }

    // The apiserver's admission calls reach the webhook inside the container: the dry run
    // `desk_namespace` waits for comes back defaulted, a desk is defaulted, a bad one denied
    // by the base's policy.
    let (ns, apis, _sim) = desk_namespace(&c, "image", SimulatorOptions::default()).await;
    apply(&c, &desk_yaml(&ns, "desk", "{}"));
    let desk = apis.desks.get("desk").await.expect("desk");
    assert_eq!(
        desk.spec.timeout_ms,
        Some(cyberdesk_operator::model::cyberdesk::DEFAULT_TIMEOUT_MS),
        "not defaulted"
    );
    assert!(
        desk.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == cyberdesk_operator::model::names::FINALIZER),
        "no finalizer"
    );
    let eight_days = 8 * 24 * 3_600_000;
    let denied = c
        .kubectl()
        .apply(
            &desk_yaml(&ns, "too-long", &format!("{{timeoutMs: {eight_days}}}")),
            &[],
        )
        .expect("kubectl");
    // Only the webhook knows the policies; the apiserver words its 422 as "is invalid".
    assert!(
        !denied.success && denied.stderr.contains(r#"policy "max-timeout-7d""#),
        "a desk over the base's 7-day policy was not denied by the webhook: {}{}",
        denied.stdout,
        denied.stderr
    );

    // The reconciler in the container, in-cluster as the ServiceAccount, makes the VM.
    apis.wait_phase("desk", "Running", Duration::from_secs(60))
        .await;
    apis.vms
        .get("cyberdesk-desk")
        .await
        .expect("the desk's VM exists");

    // The binary is this commit's.
    let revision = eventually(Duration::from_secs(10), "a /metrics scrape", || async {
        cyberdesk_integration::controlplane::http_get(admin, "/metrics")
            .ok()
            .and_then(|(_, body)| build_revision(&body))
    })
    .await;
    assert_eq!(
        revision,
        git_revision(),
        "the image is from another commit: run `make image`"
    );

    // No shell to exec into.
    for shell in ["sh", "/bin/sh"] {
        let out = podman
            .output(&["exec", &name, shell, "-c", "true"])
            .expect("podman");
        assert!(
            !out.status.success(),
            "`podman exec {name} {shell}` succeeded: the image has a shell"
        );
    }

    // SIGTERM, as the kubelet sends it: exit 0 before the grace period would end in SIGKILL.
    podman
        .ok(&["kill", "--signal=TERM", &name])
        .unwrap_or_else(|e| panic!("{e}"));
    let grace = Duration::from_secs(run.termination_grace_seconds);
    let exited = until(grace, || {
        let state = container.state();
        async move { (state.0 == "exited").then_some(state.1) }
    })
    .await;
    assert_eq!(
        exited,
        Some(0),
        "after SIGTERM: exit code within {grace:?} (None: still running); log:\n{}",
        container.logs()
    );
}

/// The image's files, from `podman export` of a container never started.
fn image_files(podman: &Podman, image: &str, scratch: &Path) -> Vec<String> {
    let name = format!("cyberdesk-image-files-{}", std::process::id());
    let _ = podman.output(&["rm", "-f", &name]);
    podman
        .ok(&["create", &format!("--name={name}"), image])
        .unwrap_or_else(|e| panic!("{e}"));
    let container = Container {
        podman,
        name: name.clone(),
    };
    let tar = scratch.join("rootfs.tar");
    podman
        .ok(&["export", "-o", &tar.display().to_string(), &name])
        .unwrap_or_else(|e| panic!("{e}"));
    podman
        .ok(&[
            "cp",
            &format!("{name}:/cyberdesk-operator"),
            &scratch.display().to_string(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(container);
    let out = Command::new("tar")
        .args(["-tf", &tar.display().to_string()])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar -tf failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

/// The names of an ELF64 file's sections, and whether it asks for a dynamic loader.
fn elf_facts(bytes: &[u8]) -> (Vec<String>, bool) {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at =
        |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4])) as usize;
    let u64_at =
        |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8])) as usize;
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "not a 64-bit ELF file");
    let (phoff, shoff) = (u64_at(0x20), u64_at(0x28));
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let (shentsize, shnum, shstrndx) = (u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    // PT_INTERP = 3: a dynamically linked program names its loader.
    let interp = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == 3);
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18);
    let names = (0..shnum)
        .map(|i| {
            let start = strtab + u32_at(shoff + i * shentsize);
            let end = bytes[start..].iter().position(|b| *b == 0).unwrap_or(0);
            String::from_utf8_lossy(&bytes[start..start + end]).into_owned()
        })
        .collect();
    (names, interp)
}

#[test]
fn the_image_holds_only_the_binary_the_ca_bundle_and_its_user() {
    let podman = podman();
    let image = built_image(&podman);
    let config = podman
        .ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.Size}}",
            &image,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let fields: Vec<&str> = config.trim().split('|').collect();
    assert_eq!(
        fields[..3],
        ["65532:65532", r#"["/cyberdesk-operator"]"#, r#"["run"]"#],
        "{config}"
    );
    let size: u64 = fields[3].parse().expect("size");
    assert!(size < 25 << 20, "the image is {size} bytes, over 25 MiB");

    let scratch = std::env::temp_dir().join(format!("cyberdesk-image-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let mut files = image_files(&podman, &image, &scratch);
    files.sort();
    assert_eq!(
        files,
        [
            "cyberdesk-operator",
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt"
        ],
        "the image holds something else (a shell, a package manager?)"
    );

    // Static (no loader to find in an image without libc), with its dependency list for
    // scanners (cargo auditable's .dep-v0 section).
    let binary = std::fs::read(scratch.join("cyberdesk-operator")).expect("the binary");
    let _ = std::fs::remove_dir_all(&scratch);
    let (sections, interp) = elf_facts(&binary);
    assert!(!interp, "the binary is dynamically linked");
    assert!(
        sections.iter().any(|s| s == ".dep-v0"),
        "no .dep-v0 section: not built with cargo auditable; sections: {sections:?}"
    );
}

/// The paths `image/binaries.Dockerfile` copies into its build, each checked to land where
/// it is in the repository (`COPY x ./x`), so a copy of them is the builder's tree.
fn builder_copies() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(repo_path("image/binaries.Dockerfile"))
        .expect("image/binaries.Dockerfile");
    dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let [_, src, dest] = words[..] else {
                panic!("one path per COPY, please: {l}");
            };
            assert_eq!(
                dest.trim_start_matches("./"),
                src.trim_end_matches('/'),
                "COPY must keep the repository's layout: {l}"
            );
            src.trim_end_matches('/').to_string()
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// The operator builds (`cargo check`: build script, macros, every embedded file) from a
/// copy of exactly what the release's builder stage copies. A path the build reads but the
/// builder leaves out fails here, not on the first release tag.
#[test]
fn the_release_binaries_build_from_exactly_what_their_dockerfile_copies() {
    let copies = builder_copies();
    let tree =
        std::env::temp_dir().join(format!("cyberdesk-builder-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    for path in &copies {
        let from = repo_path(path);
        assert!(
            from.exists(),
            "image/binaries.Dockerfile copies {path}, which does not exist"
        );
        if let Some(parent) = tree.join(path).parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        copy_tree(&from, &tree.join(path));
    }
    // Nothing of the build's output comes along, and no git: the revision reads "unknown".
    let _ = std::fs::remove_dir_all(tree.join("integration/controlplane/bin"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The workspace's target folder: dependencies are not checked again, and the copy's own
    // crates get their own fingerprints there (no artifact of the real build is replaced).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target"));
    let out = Command::new(cargo)
        .args([
            "check",
            "--locked",
            "--offline",
            "-q",
            "-p",
            "cyberdesk-operator",
            "--bin",
            "cyberdesk-operator",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&tree)
        .output()
        .expect("cargo");
    let _ = std::fs::remove_dir_all(&tree);
    assert!(
        out.status.success(),
        "the operator does not build from what image/binaries.Dockerfile copies ({copies:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
