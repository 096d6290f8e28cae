//! Two operator replicas as a Deployment runs them: each restarted when it exits (as the
//! kubelet does), a Service in front of their webhook ports that sends each connection to
//! a replica whose `/readyz` last answered, and a record of every exit and who led.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::cluster::Cluster;
use crate::controlplane::http_get;
use crate::operator::{OperatorProcess, free_addr, metric_sample};

/// How often the supervisor looks at its replicas (exit, readiness, leadership, memory).
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// The kubelet's first restart backoff is 10 s; a shorter one keeps a short soak busy.
const RESTART_AFTER: Duration = Duration::from_secs(2);

/// One exit of a replica's process.
#[derive(Clone, Debug)]
pub struct Exit {
    pub replica: usize,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Whether the soak killed it (a fault), so the exit is expected.
    pub injected: bool,
    pub status: String,
    /// The last lines its log holds: why it exited, when it was not killed.
    pub last_words: String,
}

/// What a replica slot holds now.
struct Slot {
    process: Option<OperatorProcess>,
    incarnation: usize,
    webhook: SocketAddr,
    ready: bool,
    leader: bool,
    /// The soak is about to kill it: the exit that follows is expected.
    kill_pending: bool,
    exited_at: Option<Instant>,
    logs: Vec<std::path::PathBuf>,
    peak_rss_kib: u64,
}

#[derive(Default)]
struct Shared {
    slots: Vec<Slot>,
    exits: Vec<Exit>,
    /// Moments (ms since the epoch) when more than one replica said it led.
    two_leaders: Vec<i64>,
    next_backend: usize,
}

/// The replicas and their Service.
#[derive(Clone)]
pub struct Replicas {
    shared: Arc<Mutex<Shared>>,
    pub service: SocketAddr,
    cluster: Cluster,
    flags: Vec<String>,
}

impl Shared {
    /// The ready replica the Service sends the next connection to (round robin).
    fn next_ready(&self) -> Option<usize> {
        let ready: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].ready)
            .collect();
        ready.get(self.next_backend % ready.len().max(1)).copied()
    }
}

/// The pod name of replica `i`'s `incarnation`-th process.
fn identity(i: usize, incarnation: usize) -> String {
    format!("soak-{}-{incarnation}", (b'a' + i as u8) as char)
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replicas {
    /// Starts `count` replicas with `flags` and the Service in front of them on
    /// `listener` (the address the webhook configurations point at). Call it on a runtime
    /// whose worker threads live as long as the soak: each process dies with the thread
    /// that spawned it.
    pub async fn start(
        cluster: &Cluster,
        count: usize,
        flags: Vec<String>,
        listener: TcpListener,
    ) -> Self {
        let service = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the webhook Service's address: {e}"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let replicas = Self {
            shared,
            service,
            cluster: cluster.clone(),
            flags,
        };
        for i in 0..count {
            let webhook = free_addr();
            lock(&replicas.shared).slots.push(Slot {
                process: None,
                incarnation: 0,
                webhook,
                ready: false,
                leader: false,
                kill_pending: false,
                exited_at: None,
                logs: Vec::new(),
                peak_rss_kib: 0,
            });
            replicas.spawn(i);
        }
        tokio::spawn(replicas.clone().serve(listener));
        tokio::spawn(replicas.clone().supervise());
        replicas
    }

    fn spawn(&self, i: usize) {
        let mut s = lock(&self.shared);
        let slot = &mut s.slots[i];
        slot.incarnation += 1;
        let identity = identity(i, slot.incarnation);
        let op = OperatorProcess::start_on(&self.cluster, &identity, slot.webhook, &self.flags);
        slot.logs
            .push(self.cluster.dir.join(format!("operator-{identity}.log")));
        slot.process = Some(op);
        slot.ready = false;
        slot.leader = false;
        slot.kill_pending = false;
        slot.exited_at = None;
    }

    /// Sends `sig` to replica `i` (an injected fault: its exit is expected).
    pub fn signal(&self, i: usize, sig: libc::c_int) -> bool {
        let mut s = lock(&self.shared);
        let Some(slot) = s.slots.get_mut(i) else {
            return false;
        };
        match &slot.process {
            Some(p) => {
                slot.kill_pending = true;
                p.signal(sig);
                true
            }
            None => false,
        }
    }

    /// The replicas whose process runs now.
    pub fn running(&self) -> Vec<usize> {
        let s = lock(&self.shared);
        (0..s.slots.len())
            .filter(|&i| s.slots[i].process.is_some())
            .collect()
    }

    /// The replica that leads now, by its own `cyberdesk_leader` gauge.
    pub fn leader(&self) -> Option<usize> {
        lock(&self.shared).slots.iter().position(|s| s.leader)
    }

    /// The replica the Service would send the next connection to.
    pub fn serving(&self) -> Option<usize> {
        lock(&self.shared).next_ready()
    }

    pub fn exits(&self) -> Vec<Exit> {
        lock(&self.shared).exits.clone()
    }

    pub fn two_leaders(&self) -> Vec<i64> {
        lock(&self.shared).two_leaders.clone()
    }

    /// Every log file each replica wrote, one per incarnation.
    pub fn logs(&self) -> Vec<(usize, std::path::PathBuf)> {
        let s = lock(&self.shared);
        s.slots
            .iter()
            .enumerate()
            .flat_map(|(i, slot)| slot.logs.iter().map(move |l| (i, l.clone())))
            .collect()
    }

    pub fn peak_rss_kib(&self) -> Vec<u64> {
        lock(&self.shared)
            .slots
            .iter()
            .map(|s| s.peak_rss_kib)
            .collect()
    }

    pub fn restarts(&self) -> Vec<usize> {
        lock(&self.shared)
            .slots
            .iter()
            .map(|s| s.incarnation - 1)
            .collect()
    }

    /// Waits until some replica leads and every replica is ready.
    pub async fn wait_settled(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            {
                let s = lock(&self.shared);
                if s.slots.iter().all(|s| s.ready) && s.slots.iter().any(|s| s.leader) {
                    return true;
                }
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        false
    }

    /// Stops every replica (the end of the soak).
    pub fn stop(&self) {
        let mut s = lock(&self.shared);
        for slot in &mut s.slots {
            slot.kill_pending = true;
            slot.process = None;
        }
    }

    async fn supervise(self) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let count = lock(&self.shared).slots.len();
            let mut leaders = 0;
            for i in 0..count {
                let (admin, pid) = {
                    let mut s = lock(&self.shared);
                    let shared = &mut *s;
                    let slot = &mut shared.slots[i];
                    let Some(p) = slot.process.as_mut() else {
                        continue;
                    };
                    if let Some(status) = p.try_exit() {
                        let injected = slot.kill_pending;
                        let last_words = slot.logs.last().map(|l| tail(l, 2)).unwrap_or_default();
                        slot.process = None;
                        slot.ready = false;
                        slot.leader = false;
                        slot.exited_at = Some(Instant::now());
                        shared.exits.push(Exit {
                            replica: i,
                            at: crate::desks::now_ms(),
                            injected,
                            status: status.to_string(),
                            last_words,
                        });
                        continue;
                    }
                    (p.admin, p.pid())
                };
                let identity = self.identity(i);
                let probe = tokio::task::spawn_blocking(move || probe(admin, pid, &identity))
                    .await
                    .unwrap_or_default();
                let mut s = lock(&self.shared);
                let slot = &mut s.slots[i];
                slot.ready = probe.ready;
                slot.leader = probe.leader;
                slot.peak_rss_kib = slot.peak_rss_kib.max(probe.rss_kib);
                leaders += usize::from(probe.leader);
            }
            if leaders > 1 {
                lock(&self.shared).two_leaders.push(crate::desks::now_ms());
            }
            for i in 0..count {
                let due = {
                    let s = lock(&self.shared);
                    let slot = &s.slots[i];
                    slot.process.is_none()
                        && slot.exited_at.is_some_and(|t| t.elapsed() >= RESTART_AFTER)
                };
                if due {
                    self.spawn(i);
                }
            }
        }
    }

    fn identity(&self, i: usize) -> String {
        identity(i, lock(&self.shared).slots[i].incarnation)
    }

    /// The Service: each connection to a ready replica, in turn (kube-proxy balances
    /// connections, not requests); none ready: the connection is closed at once.
    async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let backend = {
                let mut s = lock(&self.shared);
                let chosen = s.next_ready().map(|i| s.slots[i].webhook);
                s.next_backend = s.next_backend.wrapping_add(1);
                chosen
            };
            let Some(backend) = backend else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }
}

#[derive(Default)]
struct Probe {
    ready: bool,
    leader: bool,
    rss_kib: u64,
}

fn probe(admin: SocketAddr, pid: u32, identity: &str) -> Probe {
    let ready = matches!(http_get(admin, "/readyz"), Ok((200, _)));
    let leader = http_get(admin, "/metrics").ok().and_then(|(_, body)| {
        metric_sample(
            &body,
            &format!("cyberdesk_leader{{identity=\"{identity}\"}}"),
        )
    }) == Some(1.0);
    Probe {
        ready,
        leader,
        rss_kib: rss_kib(pid),
    }
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// VmRSS of a process, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
