//! Starting and stopping the servers under test, each on loopback with a temporary data dir.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Option<Child>,
    /// The signal for a clean, fast stop (PostgreSQL's "fast" shutdown is SIGINT).
    pub stop_signal: i32,
}

impl Proc {
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, self.stop_signal);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The converge-ledger node (started by the project's one launcher; stopped through [`Proc`]).
pub fn start_ledger(bin: &Path, dir: &Path, durability: &str) -> Result<(Proc, String)> {
    let launch = ledger_launcher::Launch::new(bin, dir)
        .args(&[
            "--log-level",
            "warn",
            "--durability",
            durability,
            "--max-message-bytes",
            "1073741824",
        ])
        .show_logs(true);
    let mut node = ledger_launcher::NodeProcess::start(launch)
        .with_context(|| format!("start {}", bin.display()))?;
    let url = node.url.clone();
    Ok((
        Proc {
            child: node.take_child(),
            stop_signal: libc::SIGTERM,
        },
        url,
    ))
}

fn pg_bin(tool: &str) -> PathBuf {
    for v in ["17", "16", "15", "14", "13"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/{tool}"));
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(tool)
}

/// Runs a command as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(tool: &str) -> Command {
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        c
    } else {
        Command::new(pg_bin(tool))
    }
}

/// Initializes a PostgreSQL cluster in `dir` (owned by the postgres user when root).
pub fn init_postgres(dir: &Path) -> Result<()> {
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status();
    let out = as_postgres("initdb")
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(dir.join("pg"))
        .output()
        .context("initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Starts PostgreSQL on `port` over the cluster in `dir`.
pub fn start_postgres(dir: &Path, port: u16) -> Result<Proc> {
    let child = as_postgres("postgres")
        .arg("-D")
        .arg(dir.join("pg"))
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ])
        .args([
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "max_connections=1200",
        ])
        .args(["-c", "shared_buffers=512MB", "-c", "max_wal_size=4GB"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start postgres")?;
    Ok(Proc {
        child: Some(child),
        stop_signal: libc::SIGINT,
    })
}

/// Starts Redis with an append-only file in `dir`.
pub fn start_redis(dir: &Path, port: u16) -> Result<Proc> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
        ])
        .args([
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
            "--maxclients",
            "10000",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server")?;
    Ok(Proc {
        child: Some(child),
        stop_signal: libc::SIGTERM,
    })
}

/// Starts NATS with JetStream file storage in `dir`; with `sync_always`, the server fsyncs
/// every stored message before acknowledging it (`sync_interval: always`, NATS 2.10+).
pub fn start_nats(bin: &Path, dir: &Path, port: u16, sync_always: bool) -> Result<Proc> {
    let conf = dir.join("nats.conf");
    let store = dir.join("jetstream");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {store:?}\n{}}}\n",
            if sync_always {
                "  sync_interval: always\n"
            } else {
                ""
            }
        ),
    )?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    Ok(Proc {
        child: Some(child),
        stop_signal: libc::SIGTERM,
    })
}

/// A JetStream cluster of `client_ports.len()` servers on 127.0.0.1 (file storage, every
/// message fsynced), routed to each other on `route_ports`: the peer a user would pick for
/// replicated durable streams (R3).
pub fn start_nats_cluster(
    bin: &Path,
    dirs: &[PathBuf],
    client_ports: &[u16],
    route_ports: &[u16],
) -> Result<Vec<Proc>> {
    let routes: Vec<String> = route_ports
        .iter()
        .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
        .collect();
    let mut procs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let conf = dir.join("nats.conf");
        let store = dir.join("jetstream");
        std::fs::write(
            &conf,
            format!(
                "server_name: r3-{i}\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\ncluster {{\n  name: r3\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                client_ports[i],
                route_ports[i],
                routes.join(", ")
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        procs.push(Proc {
            child: Some(child),
            stop_signal: libc::SIGTERM,
        });
    }
    Ok(procs)
}

/// The packaged nats-server, when no other is given.
pub fn default_nats_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("nats-server")
}

/// `(major, minor)` of a nats-server binary (`nats-server: v2.15.1`).
pub fn nats_version(bin: &Path) -> Result<(u32, u32)> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .trim()
        .rsplit('v')
        .next()
        .context("no version in nats-server --version")?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => anyhow::bail!("cannot read the nats-server version from {text:?}"),
    }
}
