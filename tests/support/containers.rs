//! Docker and Compose for the container suite: whether an engine is reachable, the image
//! (deploy/image.sh), and a compose project of deploy/compose with the faults a nemesis injects
//! (network disconnect/connect, kill, pause, restart, wipe). A [`Project`] is torn down with its
//! containers, networks and volumes when dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Label prefix of this suite's compose projects (`ledger-e2e-<pid>`).
pub const PROJECT_PREFIX: &str = "ledger-e2e-";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How to run Compose on this machine: `docker compose` (v2) or `docker-compose` (v1).
#[derive(Clone, Debug)]
pub struct Engine {
    pub compose: Vec<String>,
}

async fn run(program: &str, args: &[String], env: &[(String, String)]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    // A developer's LEDGER_* settings must not reach the compose files' ${LEDGER_…} variables.
    for (k, _) in std::env::vars() {
        if k.starts_with("LEDGER_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `docker ARGS…`: its stdout, or an error with its stderr.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", &strings(args), &[]).await
}

/// The engine and compose command, or why the container suite cannot run here.
pub async fn engine() -> Result<Engine, String> {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .await
        .map_err(|e| format!("no Docker engine is reachable ({e})"))?;
    for compose in [vec!["docker", "compose"], vec!["docker-compose"]] {
        let (program, rest) = compose.split_first().expect("non-empty");
        let mut args = strings(rest);
        args.push("version".into());
        if run(program, &args, &[]).await.is_ok() {
            return Ok(Engine {
                compose: strings(&compose),
            });
        }
    }
    Err("neither `docker compose` nor `docker-compose` is installed".into())
}

/// Builds (or finds up to date) `converge-ledger:latest` from `bin` with deploy/image.sh.
pub async fn build_image(bin: &str) -> Result<String, String> {
    let script = repo().join("deploy/image.sh");
    run(
        script.to_str().expect("utf-8 path"),
        &[bin.to_owned()],
        &[("LEDGER_IMAGE".into(), IMAGE.into())],
    )
    .await
}

/// The image the suite runs.
pub const IMAGE: &str = "converge-ledger:latest";

/// Removes what earlier runs of this suite left behind when they were killed before they could
/// clean up (containers, then networks and volumes of `ledger-e2e-*` projects).
pub async fn remove_leftovers() {
    let label = "label=com.docker.compose.project";
    let projects = docker(&[
        "ps",
        "-a",
        "--filter",
        label,
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ])
    .await
    .unwrap_or_default();
    let networks = docker(&[
        "network",
        "ls",
        "--filter",
        label,
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ])
    .await
    .unwrap_or_default();
    let volumes = docker(&[
        "volume",
        "ls",
        "--filter",
        label,
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ])
    .await
    .unwrap_or_default();
    let mut stale: Vec<&str> = projects
        .lines()
        .chain(networks.lines())
        .chain(volumes.lines())
        .filter(|p| p.starts_with(PROJECT_PREFIX))
        .collect();
    stale.sort_unstable();
    stale.dedup();
    for p in stale {
        eprintln!("removing the leftovers of an earlier run: compose project {p}");
        let filter = format!("label=com.docker.compose.project={p}");
        let ids = docker(&["ps", "-aq", "--filter", &filter])
            .await
            .unwrap_or_default();
        for id in ids.lines() {
            let _ = docker(&["rm", "-f", "-v", id]).await;
        }
        for kind in ["network", "volume"] {
            let ids = docker(&[kind, "ls", "-q", "--filter", &filter])
                .await
                .unwrap_or_default();
            for id in ids.lines() {
                let _ = docker(&[kind, "rm", id]).await;
            }
        }
    }
}

/// A subnet no Docker network uses now, chosen by the engine: created, read, removed.
pub async fn free_subnet(name: &str) -> Result<String, String> {
    let probe = format!("{name}-probe");
    docker(&["network", "create", &probe]).await?;
    let subnet = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        &probe,
    ])
    .await;
    docker(&["network", "rm", &probe]).await?;
    subnet
}

/// One service of a running project.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    /// Its container id (changes when the container is recreated).
    pub id: String,
    /// Its fixed address on the project's network.
    pub ip: String,
    /// Its gRPC, published on the host.
    pub url: String,
}

/// A compose project: `files` with `env`, its services, torn down (with volumes) when dropped.
#[derive(Debug)]
pub struct Project {
    pub name: String,
    engine: Engine,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    pub network: String,
    pub services: Vec<Service>,
}

impl Project {
    /// `compose up -d` of `services` (each `(name, fixed ip, published url)`), waiting until
    /// Docker reports each healthy.
    pub async fn up(
        engine: &Engine,
        name: &str,
        files: &[PathBuf],
        env: &[(String, String)],
        services: &[(String, String, String)],
    ) -> Result<Project, String> {
        let mut p = Project {
            name: name.to_owned(),
            engine: engine.clone(),
            files: files.to_vec(),
            env: env.to_vec(),
            network: String::new(),
            services: services
                .iter()
                .map(|(name, ip, url)| Service {
                    name: name.clone(),
                    id: String::new(),
                    ip: ip.clone(),
                    url: url.clone(),
                })
                .collect(),
        };
        let names: Vec<String> = p.services.iter().map(|s| s.name.clone()).collect();
        let mut args = vec!["up".to_owned(), "-d".into(), "--no-color".into()];
        args.extend(names.iter().cloned());
        p.compose(&args).await?;
        for i in 0..p.services.len() {
            p.refresh(i).await?;
        }
        let first = p.services[0].id.clone();
        p.network = docker(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            &first,
        ])
        .await?;
        for i in 0..p.services.len() {
            p.wait_healthy(i, Duration::from_secs(90)).await?;
        }
        Ok(p)
    }

    /// Runs compose with the project's name, files and environment.
    pub async fn compose(&self, args: &[String]) -> Result<String, String> {
        let (program, rest) = self.engine.compose.split_first().expect("non-empty");
        let mut all = rest.to_vec();
        all.extend(["-p".into(), self.name.clone()]);
        for f in &self.files {
            all.extend(["-f".into(), f.display().to_string()]);
        }
        all.extend(args.iter().cloned());
        run(program, &all, &self.env).await
    }

    /// Index of service `name`.
    pub fn index(&self, name: &str) -> usize {
        self.services
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Reads service `i`'s container id again (after it was recreated).
    async fn refresh(&mut self, i: usize) -> Result<(), String> {
        let name = self.services[i].name.clone();
        let id = self
            .compose(&["ps".into(), "-q".into(), name.clone()])
            .await?;
        if id.is_empty() {
            return Err(format!("service {name} has no container"));
        }
        self.services[i].id = id;
        Ok(())
    }

    /// Waits until Docker's health check (`converge-ledger health` in the container) reports
    /// service `i` healthy.
    pub async fn wait_healthy(&self, i: usize, limit: Duration) -> Result<(), String> {
        let s = &self.services[i];
        let deadline = Instant::now() + limit;
        loop {
            let state = docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Health.Status}}",
                &s.id,
            ])
            .await?;
            if state == "running healthy" {
                return Ok(());
            }
            if Instant::now() > deadline || state.starts_with("exited") {
                return Err(format!(
                    "{} is not healthy after {limit:?}: {state}",
                    s.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Cuts service `i` off the project's network (a partition: it reaches nobody, nobody
    /// reaches it, the host's published port included).
    pub async fn disconnect(&self, i: usize) -> Result<(), String> {
        docker(&[
            "network",
            "disconnect",
            "-f",
            &self.network,
            &self.services[i].id,
        ])
        .await
        .map(drop)
    }

    /// Reconnects service `i` with the address and DNS name it had.
    pub async fn connect(&self, i: usize) -> Result<(), String> {
        let s = &self.services[i];
        docker(&[
            "network",
            "connect",
            "--ip",
            &s.ip,
            "--alias",
            &s.name,
            &self.network,
            &s.id,
        ])
        .await
        .map(drop)
    }

    /// `docker ACTION` (kill, start, pause, unpause, restart -t 10, …) on service `i`.
    pub async fn act(&self, action: &[&str], i: usize) -> Result<(), String> {
        let mut args = action.to_vec();
        args.push(&self.services[i].id);
        docker(&args).await.map(drop)
    }

    /// Runs `converge-ledger ARGS…` inside service `i`'s container (which reaches its own node
    /// even when the network is cut); gives up after `limit`.
    pub async fn exec(&self, i: usize, args: &[&str], limit: Duration) -> Result<String, String> {
        let mut all = vec!["exec", &self.services[i].id, "converge-ledger"];
        all.extend_from_slice(args);
        tokio::time::timeout(limit, docker(&all))
            .await
            .map_err(|_| format!("no answer within {limit:?}"))?
    }

    /// Removes service `i`'s container and its data volume, then creates it again: the node
    /// comes back with an empty data dir under its old id.
    pub async fn wipe(&mut self, i: usize) -> Result<(), String> {
        let name = self.services[i].name.clone();
        self.compose(&["rm".into(), "-f".into(), "-s".into(), name.clone()])
            .await?;
        let filter_p = format!("label=com.docker.compose.project={}", self.name);
        let filter_v = format!("label=com.docker.compose.volume={name}-data");
        let volume = docker(&[
            "volume", "ls", "-q", "--filter", &filter_p, "--filter", &filter_v,
        ])
        .await?;
        if volume.is_empty() {
            return Err(format!("no volume {name}-data in project {}", self.name));
        }
        docker(&["volume", "rm", &volume]).await?;
        self.compose(&[
            "up".into(),
            "-d".into(),
            "--no-deps".into(),
            "--no-color".into(),
            name,
        ])
        .await?;
        self.refresh(i).await
    }

    /// The last `lines` lines of service `i`'s log.
    pub async fn logs(&self, i: usize, lines: usize) -> String {
        let out = tokio::process::Command::new("docker")
            .args(["logs", "--tail", &lines.to_string(), &self.services[i].id])
            .output()
            .await;
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("docker logs: {e}"),
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let (program, rest) = self.engine.compose.split_first().expect("non-empty");
        let mut cmd = std::process::Command::new(program);
        cmd.args(rest).args(["-p", &self.name]);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["down", "-v", "--remove-orphans", "-t", "2"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Unpause first: a paused container cannot be stopped.
        for s in &self.services {
            let _ = std::process::Command::new("docker")
                .args(["unpause", &s.id])
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
        if let Err(e) = cmd.status() {
            eprintln!("could not tear down compose project {}: {e}", self.name);
        }
    }
}
