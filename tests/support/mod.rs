//! Test support: run the real `converge-ledger` binary as a user would and talk gRPC to it.
#![allow(dead_code)]

use ledger_client::LedgerClient;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_converge-ledger");

/// A running node process.
pub struct Node {
    child: Option<Child>,
    pub addr: std::net::SocketAddr,
    pub url: String,
    pub listening: serde_json::Value,
}

/// Environment variables that would leak a developer's settings into a test node.
fn clean(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("LEDGER_") || k == "GRPC_PORT" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
}

impl Node {
    /// Starts a node on 127.0.0.1, any free port, data in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Node {
        Self::start_with_env(dir, args, &[])
    }

    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--host", "127.0.0.1"]);
        if !args.contains(&"--port")
            && !env
                .iter()
                .any(|(k, _)| *k == "GRPC_PORT" || *k == "LEDGER_PORT")
        {
            cmd.args(["--port", "0"]);
        }
        cmd.args(args);
        Self::spawn(cmd, env)
    }

    /// Starts `converge-ledger serve` with exactly these arguments and environment.
    pub fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Node {
        clean(&mut cmd);
        cmd.envs(env.iter().copied());
        let stderr = if std::env::var_os("LEDGER_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start converge-ledger");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node printed its listening line");
        let listening: serde_json::Value =
            serde_json::from_str(&line).expect("listening line is JSON");
        assert_eq!(listening["event"], "listening");
        let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
        Node {
            child: Some(child),
            addr,
            url: format!("http://{addr}"),
            listening,
        }
    }

    pub async fn client(&self) -> LedgerClient {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match LedgerClient::connect(&self.url).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        wait_timeout(&mut child, Duration::from_secs(60))
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh data dir.
/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Runs the CLI with arguments; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    clean(&mut cmd);
    let out = cmd.args(args).output().expect("run converge-ledger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

pub fn tmp_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Appends `n` entries with key `facts` and payload `"<ctx>-<i>"`.
pub async fn append_n(c: &LedgerClient, ctx: &str, n: usize) {
    for i in 0..n {
        c.append(
            ctx,
            "facts",
            format!("{ctx}-{i}").into_bytes(),
            ledger_core::Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }
}
