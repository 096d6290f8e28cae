//! The operator's image under podman, started the way the shipped Deployment starts it. The
//! container's args, env, user, security context, limits, volumes, probes and grace period
//! are read from the rendered Deployment (`kubectl kustomize manifests/base`), never
//! retyped; the ServiceAccount's token, CA and namespace are mounted where the kubelet's
//! projected volume puts them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_yaml::Value;

/// Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The podman `make` uses when `CYBERDESK_PODMAN` is not set: crun, Debian's default runtime,
/// fails on some cgroup layouts where runc works.
const DEFAULT_PODMAN: &str = "podman --runtime runc --cgroup-manager=cgroupfs";

/// The podman command line the tests run (`CYBERDESK_PODMAN`, which `make` sets from its
/// `PODMAN`).
pub struct Podman {
    argv: Vec<String>,
}

impl Podman {
    /// The podman `make` uses; an error that says how to get it when it does not run.
    pub fn from_env() -> Result<Self, String> {
        let line = std::env::var("CYBERDESK_PODMAN").unwrap_or_else(|_| DEFAULT_PODMAN.into());
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if argv.is_empty() {
            return Err("CYBERDESK_PODMAN is empty".into());
        }
        let podman = Self { argv };
        let hint = "the image tests need podman and runc, as root: `make tools` installs them \
                    (apt-get install podman runc)";
        match podman.output(&["--version"]) {
            Ok(out) if out.status.success() => Ok(podman),
            Ok(out) => Err(format!(
                "`{line} --version` failed ({}): {}; {hint}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run `{line}`: {e}; {hint}")),
        }
    }

    pub fn output(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// The stdout of a command that must succeed; its stderr otherwise.
    pub fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .output(args)
            .map_err(|e| format!("podman {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "podman {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// `podman run` limits every container of the tests gets. Podman as root asks for more open
/// files and processes than a machine without CAP_SYS_RESOURCE may grant (runc then fails
/// with "error setting rlimits"): open files as this process has them, processes 4096 (the
/// operator runs a few dozen threads).
pub fn run_limits() -> Vec<String> {
    let mut files = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) } == 0 {
        format!("{}:{}", files.rlim_cur, files.rlim_max)
    } else {
        "1024:1024".to_string()
    };
    vec![
        format!("--ulimit=nofile={nofile}"),
        "--ulimit=nproc=4096:4096".to_string(),
    ]
}

/// The image `make image` builds (`CYBERDESK_IMAGE`, default `cyberdesk-operator:<version>`).
pub fn image_name() -> String {
    std::env::var("CYBERDESK_IMAGE").unwrap_or_else(|_| {
        let manifest =
            std::fs::read_to_string(crate::workspace::repo_path("Cargo.toml")).unwrap_or_default();
        let version = manifest
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or("unknown");
        format!("cyberdesk-operator:{version}")
    })
}

/// An environment variable of the container: a value, or a field of the pod.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvSource {
    Value(String),
    FieldRef(String),
}

/// A probe the kubelet runs: `GET http://<pod IP>:<port><path>` with the probe's headers.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpProbe {
    /// `startupProbe`, `livenessProbe` or `readinessProbe`.
    pub kind: String,
    pub path: String,
    /// The container port, resolved from the probe's port name.
    pub port: u16,
    pub headers: Vec<(String, String)>,
}

/// What the Deployment's pod template asks of the container runtime for its one container.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRun {
    pub namespace: String,
    pub service_account: String,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvSource)>,
    /// `runAsUser`, `runAsGroup` (the container's, else the pod's).
    pub user: Option<(u32, u32)>,
    pub fs_group: Option<u32>,
    pub read_only_root: bool,
    pub drop_all_capabilities: bool,
    pub no_new_privileges: bool,
    /// `resources.limits.memory` in bytes, `resources.limits.cpu` in cores.
    pub memory_limit: Option<u64>,
    pub cpu_limit: Option<f64>,
    /// Mount paths of `emptyDir` volumes.
    pub empty_dirs: Vec<String>,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
    pub probes: Vec<HttpProbe>,
    pub termination_grace_seconds: u64,
}

fn str_at<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{what} is not a string: {v:?}"))
}

impl PodRun {
    /// Reads the Deployment's pod template; anything the harness cannot give the container
    /// as the kubelet would (another volume kind, an env source other than a pod field, a
    /// probe that is not plain HTTP) is an error, so the test is extended rather than the
    /// difference silently dropped.
    pub fn from_deployment(deployment: &Value) -> Result<Self, String> {
        let pod = &deployment["spec"]["template"]["spec"];
        let containers = pod["containers"]
            .as_sequence()
            .ok_or("the Deployment has no containers")?;
        let [container] = containers.as_slice() else {
            return Err(format!(
                "the Deployment has {} containers; the harness runs one",
                containers.len()
            ));
        };
        let namespace = str_at(&deployment["metadata"]["namespace"], "metadata.namespace")?;
        let service_account = pod["serviceAccountName"].as_str().unwrap_or("default");

        let args = match container["args"].as_sequence() {
            Some(args) => args
                .iter()
                .map(|a| str_at(a, "an arg").map(str::to_string))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        if !container["command"].is_null() {
            return Err(
                "the container sets `command`: the harness keeps the image's entrypoint".into(),
            );
        }

        let mut env = Vec::new();
        for var in container["env"].as_sequence().into_iter().flatten() {
            let name = str_at(&var["name"], "env name")?.to_string();
            let source = if let Some(value) = var["value"].as_str() {
                EnvSource::Value(value.to_string())
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                EnvSource::FieldRef(path.to_string())
            } else {
                return Err(format!("env {name}: only value and fieldRef are supported"));
            };
            env.push((name, source));
        }
        if !container["envFrom"].is_null() {
            return Err("envFrom is not supported by the harness".into());
        }

        let pod_sc = &pod["securityContext"];
        let sc = &container["securityContext"];
        let id = |key: &str| -> Option<u32> {
            sc[key]
                .as_u64()
                .or_else(|| pod_sc[key].as_u64())
                .and_then(|n| u32::try_from(n).ok())
        };
        let user = match (id("runAsUser"), id("runAsGroup")) {
            (Some(u), Some(g)) => Some((u, g)),
            (Some(u), None) => Some((u, u)),
            _ => None,
        };
        let fs_group = pod_sc["fsGroup"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok());
        let drop_all_capabilities = sc["capabilities"]["drop"]
            .as_sequence()
            .is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL")));

        let limits = &container["resources"]["limits"];
        let memory_limit = match limits["memory"].as_str() {
            Some(q) => Some(memory_bytes(q)?),
            None => None,
        };
        let cpu_limit = match &limits["cpu"] {
            Value::Null => None,
            v => Some(cpu_cores(v)?),
        };

        let volumes: BTreeMap<&str, &Value> = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v)))
            .collect();
        let mut empty_dirs = Vec::new();
        for mount in container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let name = str_at(&mount["name"], "volumeMount name")?;
            let path = str_at(&mount["mountPath"], "mountPath")?;
            match volumes.get(name) {
                Some(v) if v["emptyDir"].is_mapping() => empty_dirs.push(path.to_string()),
                _ => return Err(format!("volume {name}: only emptyDir is supported")),
            }
        }

        let mut ports = BTreeMap::new();
        for port in container["ports"].as_sequence().into_iter().flatten() {
            let number = port["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("containerPort of {port:?}"))?;
            if let Some(name) = port["name"].as_str() {
                ports.insert(name.to_string(), number);
            }
        }

        let mut probes = Vec::new();
        for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let probe = &container[kind];
            if probe.is_null() {
                continue;
            }
            let get = &probe["httpGet"];
            if !get.is_mapping() {
                return Err(format!("{kind}: only httpGet probes are supported"));
            }
            if get["scheme"].as_str().is_some_and(|s| s != "HTTP") {
                return Err(format!("{kind}: only the HTTP scheme is supported"));
            }
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(name) => ports.get(name).copied(),
                _ => None,
            }
            .ok_or_else(|| format!("{kind}: port {:?} names no container port", get["port"]))?;
            let headers = get["httpHeaders"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|h| {
                    Ok((
                        str_at(&h["name"], "header name")?.to_string(),
                        str_at(&h["value"], "header value")?.to_string(),
                    ))
                })
                .collect::<Result<_, String>>()?;
            probes.push(HttpProbe {
                kind: kind.to_string(),
                path: get["path"].as_str().unwrap_or("/").to_string(),
                port,
                headers,
            });
        }

        Ok(Self {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            args,
            env,
            user,
            fs_group,
            read_only_root: sc["readOnlyRootFilesystem"].as_bool() == Some(true),
            drop_all_capabilities,
            no_new_privileges: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
            memory_limit,
            cpu_limit,
            empty_dirs,
            ports,
            probes,
            // The API's default when the field is absent.
            termination_grace_seconds: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        })
    }

    /// The env values the kubelet would give a pod named `pod_name`.
    pub fn env_values(&self, pod_name: &str) -> Result<Vec<(String, String)>, String> {
        self.env
            .iter()
            .map(|(name, source)| {
                let value = match source {
                    EnvSource::Value(v) => v.clone(),
                    EnvSource::FieldRef(path) if path == "metadata.name" => pod_name.to_string(),
                    EnvSource::FieldRef(path) if path == "metadata.namespace" => {
                        self.namespace.clone()
                    }
                    EnvSource::FieldRef(path) => {
                        return Err(format!("env {name}: fieldRef {path} is not supported"));
                    }
                };
                Ok((name.clone(), value))
            })
            .collect()
    }

    /// `podman run` options for this pod's security context, limits and volumes (not its
    /// env, network or image).
    pub fn podman_options(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((uid, gid)) = self.user {
            out.push(format!("--user={uid}:{gid}"));
        }
        // The kubelet adds fsGroup to the container's supplementary groups.
        if let Some(group) = self.fs_group {
            out.push(format!("--group-add={group}"));
        }
        if self.read_only_root {
            // Writable paths only where the Deployment mounts a volume, not podman's extras.
            out.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if self.drop_all_capabilities {
            out.push("--cap-drop=ALL".into());
        }
        if self.no_new_privileges {
            out.push("--security-opt=no-new-privileges".into());
        }
        if let Some(bytes) = self.memory_limit {
            out.push(format!("--memory={bytes}b"));
        }
        if let Some(cores) = self.cpu_limit {
            out.push(format!("--cpus={cores}"));
        }
        for path in &self.empty_dirs {
            out.push(format!("--tmpfs={path}:rw,mode=1777"));
        }
        out
    }
}

/// A memory quantity (`256Mi`, `1Gi`, `500M`, bytes) in bytes.
fn memory_bytes(q: &str) -> Result<u64, String> {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (digits, factor) = units
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|d| (d, *f)))
        .unwrap_or((q, 1));
    digits
        .parse::<u64>()
        .map(|n| n * factor)
        .map_err(|_| format!("memory quantity {q:?} is not supported"))
}

/// A CPU quantity (`500m`, `2`, `0.5`) in cores.
fn cpu_cores(v: &Value) -> Result<f64, String> {
    if let Some(n) = v.as_f64() {
        return Ok(n);
    }
    let q = v.as_str().unwrap_or_default();
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => q.parse::<f64>(),
    }
    .map_err(|_| format!("cpu quantity {v:?} is not supported"))
}

/// The status of `GET http://addr<path>` asked as the kubelet asks a probe (its User-Agent,
/// `Accept: */*`, the probe's headers); the kubelet counts 200–399 as success.
pub fn kubelet_probe(addr: SocketAddr, probe: &HttpProbe) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n",
        probe.path
    );
    for (name, value) in &probe.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"
metadata: {name: op, namespace: ns}
spec:
  template:
    spec:
      serviceAccountName: op
      terminationGracePeriodSeconds: 20
      securityContext: {runAsUser: 65532, runAsGroup: 65533, fsGroup: 65534}
      containers:
        - name: operator
          args: ["run"]
          env:
            - {name: A, value: "1"}
            - name: POD
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          ports:
            - {name: admin, containerPort: 8081}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: ["ALL"]}
          resources: {limits: {cpu: 500m, memory: 256Mi}}
          readinessProbe: {httpGet: {path: /readyz, port: admin}}
          livenessProbe: {httpGet: {path: /healthz, port: 8081, httpHeaders: [{name: X, value: y}]}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
"#;

    #[test]
    fn reads_what_the_pod_template_asks_for() {
        let d: Value = serde_yaml::from_str(DEPLOYMENT).unwrap();
        let run = PodRun::from_deployment(&d).unwrap();
        assert_eq!(run.user, Some((65532, 65533)));
        assert_eq!(run.fs_group, Some(65534));
        assert_eq!(run.memory_limit, Some(256 << 20));
        assert_eq!(run.cpu_limit, Some(0.5));
        assert_eq!(run.termination_grace_seconds, 20);
        assert_eq!(run.empty_dirs, vec!["/tmp"]);
        assert_eq!(
            run.probes
                .iter()
                .map(|p| (p.kind.as_str(), p.port))
                .collect::<Vec<_>>(),
            vec![("livenessProbe", 8081), ("readinessProbe", 8081)]
        );
        assert_eq!(
            run.env_values("pod-1").unwrap(),
            vec![("A".into(), "1".into()), ("POD".into(), "pod-1".into())]
        );
        let opts = run.podman_options();
        for o in [
            "--user=65532:65533",
            "--group-add=65534",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--memory=268435456b",
            "--cpus=0.5",
            "--tmpfs=/tmp:rw,mode=1777",
        ] {
            assert!(opts.contains(&o.to_string()), "{o} missing from {opts:?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_give_as_the_kubelet_would() {
        let host_path = DEPLOYMENT.replace("emptyDir: {}", "hostPath: {path: /x}");
        let d: Value = serde_yaml::from_str(&host_path).unwrap();
        assert!(
            PodRun::from_deployment(&d)
                .unwrap_err()
                .contains("emptyDir")
        );
        let status = DEPLOYMENT.replace("metadata.name", "status.podIP");
        let d: Value = serde_yaml::from_str(&status).unwrap();
        let run = PodRun::from_deployment(&d).unwrap();
        assert!(run.env_values("p").unwrap_err().contains("status.podIP"));
    }
}
