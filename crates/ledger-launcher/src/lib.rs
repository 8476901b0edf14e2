//! Starts `converge-ledger serve` processes the way a user would, and stops them: the one
//! launcher of the end-to-end tests, `ledger-bench` and the comparison harness.
//!
//! A [`Launch`] describes one node (binary, data dir, loopback address, flags, environment);
//! [`NodeProcess::start`] runs it and waits for its machine-readable listening line;
//! [`cluster_addresses`] gives N nodes their own `127.0.0.x` addresses, so a cluster test can
//! cut, kill or pause one node without touching the others. Every process is killed when its
//! handle is dropped.
//!
//! No RocksDB, no gRPC: this crate only runs processes, so the harness with its own workspace can
//! use it too.
//!
//! # Layout
//! One file: [`Launch`] (what to start), [`NodeProcess`] (a running node, its listening line,
//! stop and kill), [`cluster_addresses`] and the ports of a cluster, [`Membership`] (when a
//! started cluster has formed).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variables that would leak a developer's settings into a launched node.
fn is_leaky(name: &str) -> bool {
    name.starts_with("LEDGER_") || name == "GRPC_PORT" || name == "RUST_LOG"
}

/// What to run: `bin serve --data-dir DIR --host HOST --port PORT ARGS…`.
#[derive(Clone, Debug)]
pub struct Launch {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub host: IpAddr,
    /// 0 = any free port (the bound address is read from the listening line).
    pub port: u16,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Pass the node's stderr through (else it is discarded). Also on when
    /// `LEDGER_TEST_LOGS` is set.
    pub show_logs: bool,
    /// Run through `bash -c "<prefix> && exec …"` (e.g. `ulimit -Sn 1024`).
    pub shell_prefix: Option<String>,
    /// Pass `--data-dir`, `--host` and `--port` (off for [`Launch::bare`]).
    pub defaults: bool,
}

impl Launch {
    /// A node of `bin` on 127.0.0.1, any free port, data in `data_dir`.
    pub fn new(bin: impl Into<PathBuf>, data_dir: impl AsRef<Path>) -> Self {
        Launch {
            bin: bin.into(),
            data_dir: data_dir.as_ref().to_path_buf(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            args: Vec::new(),
            env: Vec::new(),
            show_logs: false,
            shell_prefix: None,
            defaults: true,
        }
    }

    /// `bin serve ARGS…` with nothing added: for tests of how the node finds its settings
    /// (config file, environment).
    pub fn bare(bin: impl Into<PathBuf>) -> Self {
        Launch {
            defaults: false,
            ..Launch::new(bin, "")
        }
    }

    /// Adds flags after the defaults (later flags win).
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds environment variables.
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, env: &[(K, V)]) -> Self {
        self.env.extend(
            env.iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Listens on `host` (e.g. one of [`cluster_addresses`]).
    pub fn host(mut self, host: IpAddr) -> Self {
        self.host = host;
        self
    }

    /// Listens on `port`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Shows the node's log on stderr.
    pub fn show_logs(mut self, show: bool) -> Self {
        self.show_logs = show;
        self
    }

    /// Runs the node from a shell after `prefix` (e.g. `ulimit -Sn 1024 && ulimit -Hn 1024`).
    pub fn shell_prefix(mut self, prefix: &str) -> Self {
        self.shell_prefix = Some(prefix.to_owned());
        self
    }

    /// Whether the flags or environment already choose the port.
    fn port_given(&self) -> bool {
        self.args
            .iter()
            .any(|a| a == "--port" || a.starts_with("--port="))
            || self
                .env
                .iter()
                .any(|(k, _)| k == "GRPC_PORT" || k == "LEDGER_PORT")
    }

    fn command(&self) -> Command {
        let mut argv: Vec<String> = vec!["serve".into()];
        if self.defaults {
            argv.extend([
                "--data-dir".into(),
                self.data_dir.display().to_string(),
                "--host".into(),
                self.host.to_string(),
            ]);
            if !self.port_given() {
                argv.extend(["--port".into(), self.port.to_string()]);
            }
        }
        argv.extend(self.args.iter().cloned());
        let mut cmd = match &self.shell_prefix {
            None => {
                let mut c = Command::new(&self.bin);
                c.args(&argv);
                c
            }
            Some(prefix) => {
                let quoted: Vec<String> = std::iter::once(self.bin.display().to_string())
                    .chain(argv)
                    .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
                    .collect();
                let mut c = Command::new("bash");
                c.args(["-c", &format!("{prefix} && exec {}", quoted.join(" "))]);
                c
            }
        };
        for (k, _) in std::env::vars() {
            if is_leaky(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// `n` distinct loopback addresses, 127.0.0.10, 127.0.0.11, …: one per node of a cluster.
pub fn cluster_addresses(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                10 + u8::try_from(i).expect("< 246 nodes"),
            ))
        })
        .collect()
}

/// gRPC port of every node of a [`cluster_node`] cluster (each node has its own address).
pub const CLUSTER_GRPC_PORT: u16 = 50051;
/// Gossip port of every node of a [`cluster_node`] cluster.
pub const CLUSTER_GOSSIP_PORT: u16 = 7946;

/// Failure detection for clusters on loopback (tests, benchmarks): a killed node is declared
/// dead within about a second, a writer without a majority stops after one.
pub const FAST_CLUSTER_FLAGS: &[&str] = &[
    "--gossip-probe-interval-ms",
    "100",
    "--gossip-probe-timeout-ms",
    "50",
    "--gossip-suspicion-timeout-ms",
    "600",
    "--gossip-push-pull-interval-ms",
    "1000",
    "--writer-lease-ms",
    "1000",
    "--anti-entropy-interval-ms",
    "500",
];

/// Address of node `i` of local cluster `net`: 127.0.NET.(10 + i). One `net` per concurrently
/// running cluster.
pub fn cluster_ip(net: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        net,
        10 + u8::try_from(i).expect("< 246 nodes"),
    ))
}

/// Node `i` of local cluster `net` of `n` nodes: id `n{i+1}`, gRPC on
/// [`cluster_ip`]`:50051`, gossip on port 7946 of the same address, every node's gossip address
/// as seeds (a node skips its own, so any node can restart and rejoin, the first included),
/// [`FAST_CLUSTER_FLAGS`].
pub fn cluster_node(
    bin: impl Into<PathBuf>,
    data_dir: impl AsRef<Path>,
    net: u8,
    i: usize,
    n: usize,
) -> Launch {
    let me = cluster_ip(net, i);
    let seeds: Vec<String> = (0..n.max(i + 1))
        .map(|j| format!("{}:{CLUSTER_GOSSIP_PORT}", cluster_ip(net, j)))
        .collect();
    let mut args: Vec<String> = vec![
        "--node-id".into(),
        format!("n{}", i + 1),
        "--gossip-addr".into(),
        format!("{me}:{CLUSTER_GOSSIP_PORT}"),
        "--seeds".into(),
        seeds.join(","),
    ];
    args.extend(FAST_CLUSTER_FLAGS.iter().map(|s| (*s).to_owned()));
    Launch::new(bin, data_dir)
        .host(me)
        .port(CLUSTER_GRPC_PORT)
        .args(&args)
}

/// Why a node did not start.
#[derive(Debug)]
pub enum LaunchError {
    Spawn(std::io::Error),
    /// It exited or printed nothing parseable within the start timeout.
    NoListeningLine(String),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Spawn(e) => write!(f, "cannot start converge-ledger: {e}"),
            LaunchError::NoListeningLine(why) => {
                write!(f, "converge-ledger did not report listening: {why}")
            }
        }
    }
}

impl std::error::Error for LaunchError {}

/// A running node process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    /// The listening line (JSON: addr, data_dir, public_key, …).
    pub listening: serde_json::Value,
    /// How it was started (to restart it the same way).
    pub launch: Launch,
}

impl NodeProcess {
    /// Starts the node and waits for its listening line.
    pub fn start(launch: Launch) -> Result<NodeProcess, LaunchError> {
        let mut cmd = launch.command();
        let logs = launch.show_logs || std::env::var_os("LEDGER_TEST_LOGS").is_some();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(if logs {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .map_err(LaunchError::Spawn)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the first line, then keeps draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(LaunchError::NoListeningLine(format!(
                    "{other:?} (exit status {status:?})"
                )));
            }
        };
        let listening: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| LaunchError::NoListeningLine(format!("{line:?}: {e}")))?;
        let addr: SocketAddr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| LaunchError::NoListeningLine(format!("no addr in {line}")))?;
        Ok(NodeProcess {
            child: Some(child),
            addr,
            url: format!("http://{addr}"),
            listening,
            launch,
        })
    }

    /// The process id (while running).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGTERM, …) to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child process.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    /// SIGTERM, then waits (up to `limit`, then SIGKILL) for the exit status.
    pub fn terminate_within(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("converge-ledger did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and the exit status (60 s at most).
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(60))
    }

    /// Hands the process over to the caller (who then stops it); this handle no longer does.
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again exactly as before (same data dir and address; port 0 picks a new
    /// port unless a port was given).
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        *self = NodeProcess::start(self.launch.clone())?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port(host: IpAddr) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The `converge-ledger` binary next to the running executable (as cargo lays out a target
/// dir), or on the `PATH`.
pub fn binary_next_to_current_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            // Tests run from target/<profile>/deps; binaries live in target/<profile>.
            p.ancestors()
                .skip(1)
                .take(2)
                .map(|d| d.join("converge-ledger"))
                .find(|b| b.exists())
        })
        .unwrap_or_else(|| PathBuf::from("converge-ledger"))
}

/// What one node's `cluster status --json` document says about the members, for waiting
/// until a cluster has formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Members gossip reports alive.
    pub alive: usize,
    /// Members of the placement view (0 without one).
    pub in_view: usize,
    /// Whether the node places contexts on a placement view (`views.enabled`; a node that
    /// does not say so: whether it has one, version > 0).
    pub views_on: bool,
}

impl Membership {
    pub fn of(status: &serde_json::Value) -> Self {
        Membership {
            alive: status["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count()),
            in_view: status["views"]["members"].as_array().map_or(0, Vec::len),
            views_on: status["views"]["enabled"]
                .as_bool()
                .unwrap_or(status["views"]["version"].as_u64().unwrap_or(0) > 0),
        }
    }

    /// `n` members alive and, with placement views on, all in the view (contexts are placed on
    /// it; a node whose log has no first view yet is not ready).
    pub fn ready(&self, n: usize) -> bool {
        self.alive >= n && (!self.views_on || self.in_view >= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_ready_when_alive_and_in_the_view() {
        let doc = serde_json::json!({
            "members": [{"state": "alive"}, {"state": "alive"}, {"state": "dead"}],
            "views": {"version": 2, "members": [{}, {}]},
        });
        let m = Membership::of(&doc);
        assert_eq!((m.alive, m.in_view, m.views_on), (2, 2, true));
        assert!(m.ready(2));
        assert!(!m.ready(3));
        let no_views =
            serde_json::json!({"members": [{"state": "alive"}], "views": {"version": 0}});
        assert!(Membership::of(&no_views).ready(1));
        let lagging_view = serde_json::json!({
            "members": [{"state": "alive"}, {"state": "alive"}],
            "views": {"version": 1, "members": [{}]},
        });
        assert!(!Membership::of(&lagging_view).ready(2));
        let not_yet_bootstrapped = serde_json::json!({
            "members": [{"state": "alive"}, {"state": "alive"}],
            "views": {"enabled": true, "version": 0, "members": []},
        });
        assert!(!Membership::of(&not_yet_bootstrapped).ready(2));
        let off = serde_json::json!({
            "members": [{"state": "alive"}],
            "views": {"enabled": false, "version": 0, "members": []},
        });
        assert!(Membership::of(&off).ready(1));
    }

    fn argv(l: &Launch) -> Vec<String> {
        let cmd = l.command();
        std::iter::once(cmd.get_program().to_string_lossy().into_owned())
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn nodes_get_their_own_loopback_addresses() {
        let a = cluster_addresses(5);
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|ip| ip.is_loopback()));
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn the_command_line_is_what_a_user_would_type() {
        let l = Launch::new("/bin/converge-ledger", "/d")
            .host(cluster_addresses(2)[1])
            .args(&["--durability", "buffered"]);
        assert_eq!(
            argv(&l),
            [
                "/bin/converge-ledger",
                "serve",
                "--data-dir",
                "/d",
                "--host",
                "127.0.0.11",
                "--port",
                "0",
                "--durability",
                "buffered"
            ]
        );
        // A port given by flag or environment is not overridden.
        let l = Launch::new("b", "/d").envs(&[("LEDGER_PORT", "7000")]);
        assert!(!argv(&l).contains(&"--port".to_owned()));
        assert_eq!(
            argv(&Launch::bare("b").args(&["--config", "x"])),
            ["b", "serve", "--config", "x"]
        );
        // Through a shell, every argument is quoted.
        let l = Launch::new("b", "/it's").shell_prefix("ulimit -Sn 1024");
        let v = argv(&l);
        assert_eq!(v[0], "bash");
        assert!(
            v[2].starts_with("ulimit -Sn 1024 && exec 'b' 'serve' '--data-dir' '/it'\\''s'"),
            "{}",
            v[2]
        );
    }
}
