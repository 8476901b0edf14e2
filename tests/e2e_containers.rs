//! The cluster in containers, attacked there: the image of deploy/image.sh, the compose files
//! of deploy/compose, the Jepsen-style checker of `support::checker` driven through the nodes'
//! published ports (127.0.0.1:5005N), and a seeded nemesis acting on containers:
//!
//! | scenario | what the nemesis does |
//! |---|---|
//! | `partition-follower` | `docker network disconnect` of a follower of the busy contexts, `connect` after 4 s |
//! | `partition-writer` | the same to their writer (majority fences it, a new writer takes over); appends are tried on the cut-off writer itself with `docker exec` (with `ack=quorum` none may be acknowledged and lost) |
//! | `flapping-link` | the writer's link goes down and up every 0.2–0.9 s for 6 s |
//! | `kill-writer`, `kill-follower` | `docker kill` (SIGKILL), `docker start` after 4 s |
//! | `freeze-writer` | `docker pause` of the writer for 4 s (failure detection: ~1 s), `unpause`, appends tried on the zombie at once |
//! | `rolling-restart` | `docker restart` of every node in turn (SIGTERM, drain), each healthy before the next |
//! | `wipe` | a follower's container and data volume removed, the node recreated: anti-entropy refills it with every context written so far |
//! | `kill-two-of-five` | on five nodes (docker-compose.five.yml): `docker kill` of the writer and another node, `start` after 4 s |
//!
//! Appends and watchers run through every scenario; after healing, every node must be healthy
//! again and appends acknowledged again. Each scenario prints one row (support::checker::Row);
//! the suite fails on any non-zero lost, duplicated, divergent or watchers-with-gaps column. On a
//! failure the nodes' logs are saved next to the test's temporary files.
//!
//! The seed is `LEDGER_CHECKER_SEED` (default 1). With no Docker engine, no compose, or no
//! image, the suite says so and passes.

mod support;

use ledger_launcher::CLUSTER_GRPC_PORT;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::checker::{FinalLogs, History, Rng, Row, Running, Workload, check, final_logs};
use support::cluster::status_at;
use support::containers::{
    Engine, IMAGE, PROJECT_PREFIX, Project, build_image, docker, engine, free_subnet,
    remove_leftovers, repo,
};

const CONTEXTS: usize = 4;
const APPENDERS: usize = 6;
/// An append not answered within this is "unknown".
const APPEND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a fault lasts: above failure detection (suspicion 1 s) plus the writer lease (1 s).
const HOLD: Duration = Duration::from_secs(4);
const FLAP_FOR: Duration = Duration::from_secs(6);
/// Acknowledged appends wanted before the fault and again after healing.
const PROGRESS: usize = 20;
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    PartitionFollower,
    PartitionWriter,
    FlappingLink,
    KillWriter,
    KillFollower,
    FreezeWriter,
    RollingRestart,
    Wipe,
    KillTwoOfFive,
}

use Scenario::*;

const THREE_NODES: &[Scenario] = &[
    PartitionFollower,
    PartitionWriter,
    FlappingLink,
    KillWriter,
    KillFollower,
    FreezeWriter,
    RollingRestart,
    Wipe,
];
const FIVE_NODES: &[Scenario] = &[KillTwoOfFive];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            PartitionFollower => "partition-follower",
            PartitionWriter => "partition-writer",
            FlappingLink => "flapping-link",
            KillWriter => "kill-writer",
            KillFollower => "kill-follower",
            FreezeWriter => "freeze-writer",
            RollingRestart => "rolling-restart",
            Wipe => "wipe",
            KillTwoOfFive => "kill-two-of-five",
        }
    }
}

fn skip(why: &str) {
    println!("container suite: SKIPPED: {why}");
}

/// Docker, compose and the image, or why the suite cannot run here.
async fn prerequisites() -> Result<Engine, String> {
    let engine = engine().await?;
    build_image(support::BIN)
        .await
        .map_err(|e| format!("the image cannot be built: {e}"))?;
    Ok(engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_in_containers_survives_partitions_kills_freezes_restarts_and_wipes() {
    let started = Instant::now();
    let engine = match prerequisites().await {
        Ok(e) => e,
        Err(why) => return skip(&why),
    };
    remove_leftovers().await;
    let seed: u64 = std::env::var("LEDGER_CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rows = Vec::new();
    for (nodes, scenarios) in [(3, THREE_NODES), (5, FIVE_NODES)] {
        let mut suite = Suite::start(&engine, nodes, seed)
            .await
            .unwrap_or_else(|e| panic!("compose cluster of {nodes} nodes: {e}"));
        for (k, s) in scenarios.iter().enumerate() {
            let row = suite.run(*s, k as u64).await;
            println!("{}", row.line());
            let failed = !row.passed();
            rows.push(row);
            if failed && k + 1 < scenarios.len() {
                // The next scenario starts from a fresh cluster.
                drop(suite);
                suite = Suite::start(&engine, nodes, seed)
                    .await
                    .unwrap_or_else(|e| panic!("compose cluster of {nodes} nodes: {e}"));
            }
        }
    }
    println!(
        "\ncontainer suite, seed {seed}, {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        Row::HEADER
    );
    for r in &rows {
        println!("{}", r.line());
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}:\n  {}", r.scenario, r.problems.join("\n  ")))
        .collect();
    assert!(
        failed.is_empty(),
        "scenarios failed:\n{}",
        failed.join("\n")
    );
}

/// A compose cluster of 3 or 5 nodes and the state the scenarios share.
struct Suite {
    project: Project,
    seed: u64,
    /// Every context written so far: a wiped node must get all of them back.
    written: Vec<String>,
}

impl Suite {
    async fn start(engine: &Engine, nodes: usize, seed: u64) -> Result<Suite, String> {
        let name = format!("{PROJECT_PREFIX}{}-{nodes}", std::process::id());
        let subnet = free_subnet(&name).await?;
        let net = subnet
            .split('/')
            .next()
            .and_then(|ip| ip.rsplit_once('.'))
            .map(|(prefix, _)| prefix.to_owned())
            .ok_or_else(|| format!("unexpected subnet {subnet}"))?;
        let dir = repo();
        let mut files = vec![
            dir.join("deploy/compose/docker-compose.yml"),
            dir.join("tests/containers/docker-compose.test.yml"),
        ];
        if nodes == 5 {
            files.push(dir.join("deploy/compose/docker-compose.five.yml"));
            files.push(dir.join("tests/containers/docker-compose.test-five.yml"));
        }
        let env = vec![
            ("LEDGER_IMAGE".to_owned(), IMAGE.to_owned()),
            ("LEDGER_TEST_SUBNET".into(), subnet.clone()),
            ("LEDGER_TEST_NET".into(), net.clone()),
        ];
        let services: Vec<(String, String, String)> = (1..=nodes)
            .map(|i| {
                (
                    format!("node{i}"),
                    format!("{net}.{}", 10 + i),
                    format!("http://127.0.0.1:{}", CLUSTER_GRPC_PORT as usize - 1 + i),
                )
            })
            .collect();
        let t = Instant::now();
        let project = Project::up(engine, &name, &files, &env, &services).await?;
        let suite = Suite {
            project,
            seed,
            written: Vec::new(),
        };
        suite.wait_members_alive().await?;
        eprintln!(
            "compose project {name}: {nodes} nodes healthy on {subnet} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(suite)
    }

    fn n(&self) -> usize {
        self.project.services.len()
    }

    /// Every node's `cluster status` lists every member alive.
    async fn wait_members_alive(&self) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        for s in &self.project.services {
            loop {
                let status = status_at(&s.url, None).await;
                let alive = status
                    .as_ref()
                    .ok()
                    .and_then(|v| v["members"].as_array())
                    .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
                if alive == self.n() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} sees {alive} of {} members alive: {status:?}",
                        s.name,
                        self.n()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Healed: every node healthy by its Docker health check, every member alive everywhere.
    async fn wait_settled(&self) -> Result<(), String> {
        for i in 0..self.n() {
            self.project.wait_healthy(i, SETTLE).await?;
        }
        self.wait_members_alive().await
    }

    /// Index of the service writing `ctx` (node ids are the service names).
    async fn writer_of(&self, ctx: &str) -> Result<usize, String> {
        let mut last = String::new();
        for s in &self.project.services {
            match status_at(&s.url, Some(ctx)).await {
                Ok(v) => {
                    let id = v["contexts"][0]["writer"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(i) = self.project.services.iter().position(|s| s.name == id) {
                        return Ok(i);
                    }
                    last = format!("no writer of {ctx}: {v}");
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A node other than `not`, chosen by `rng`.
    fn other(&self, rng: &mut Rng, not: &[usize]) -> usize {
        let candidates: Vec<usize> = (0..self.n()).filter(|i| !not.contains(i)).collect();
        candidates[rng.below(candidates.len() as u64) as usize]
    }

    fn name(&self, i: usize) -> &str {
        &self.project.services[i].name
    }

    async fn run(&mut self, scenario: Scenario, k: u64) -> Row {
        let name = scenario.name();
        let workload = Workload {
            urls: self
                .project
                .services
                .iter()
                .map(|s| s.url.clone())
                .collect(),
            contexts: (0..CONTEXTS).map(|c| format!("{name}-{c}")).collect(),
            appenders: APPENDERS,
            seed: self.seed ^ (k + 1) << 32,
            timeout: APPEND_TIMEOUT,
        };
        if let Err(e) = workload.create_contexts().await {
            return self.failed(Row::broken(name, self.seed, e)).await;
        }
        self.written.extend(workload.contexts.iter().cloned());
        let running = workload.start();
        let mut problems = Vec::new();
        if !running
            .wait_for_acks(PROGRESS, Duration::from_secs(20))
            .await
        {
            problems.push(format!(
                "fewer than {PROGRESS} appends acknowledged before the fault"
            ));
        }
        let mut rng = Rng::new(self.seed, 0xc0de + k);
        let notes = match self
            .nemesis(scenario, &mut rng, &running, &workload.contexts[0])
            .await
        {
            Ok(notes) => notes,
            Err(e) => {
                problems.push(format!("nemesis: {e}"));
                String::new()
            }
        };
        if let Err(e) = self.wait_settled().await {
            problems.push(format!("after healing: {e}"));
        }
        if !running
            .wait_for_acks(PROGRESS, Duration::from_secs(30))
            .await
        {
            problems.push(format!(
                "fewer than {PROGRESS} appends acknowledged within 30 s after healing"
            ));
        }
        let history = running.stop().await;
        let mut row = match self.final_logs(&workload.contexts, &history).await {
            Ok(logs) => check(name, self.seed, &history, &logs),
            Err(e) => Row::broken(name, self.seed, e),
        };
        row.notes = format!(
            "{notes}; quarantines {}",
            self.quarantines(&workload.contexts).await
        );
        row.problems.extend(problems);
        if scenario == Wipe && row.passed() {
            // Anti-entropy refills the wiped node with every context, from earlier scenarios too.
            let all = self.written.clone();
            match self.final_logs(&all, &History::default()).await {
                Ok(logs) => {
                    let restored = check(name, self.seed, &History::default(), &logs);
                    row.divergent += restored.divergent;
                    row.duplicated += restored.duplicated;
                    row.problems.extend(
                        restored
                            .problems
                            .into_iter()
                            .filter(|p| !p.contains("no append")),
                    );
                    row.notes
                        .push_str(&format!("; {} contexts restored", all.len()));
                }
                Err(e) => row.problems.push(format!("wiped node not refilled: {e}")),
            }
        }
        if row.passed() {
            row
        } else {
            self.failed(row).await
        }
    }

    /// Waits until every replica of `contexts` agrees and reads each replica's log.
    async fn final_logs(
        &self,
        contexts: &[String],
        history: &History,
    ) -> Result<FinalLogs, String> {
        let urls: HashMap<String, String> = self
            .project
            .services
            .iter()
            .map(|s| (s.name.clone(), s.url.clone()))
            .collect();
        final_logs(
            &self.project.services[0].url,
            contexts,
            history,
            |r| {
                urls.get(r["id"].as_str().unwrap_or_default())
                    .cloned()
                    .unwrap_or_default()
            },
            SETTLE,
        )
        .await
    }

    /// Quarantined suffixes of `contexts` on all nodes.
    async fn quarantines(&self, contexts: &[String]) -> usize {
        let mut n = 0;
        for s in &self.project.services {
            for ctx in contexts {
                if let Ok(v) = status_at(&s.url, Some(ctx)).await {
                    n += v["quarantines"].as_array().map_or(0, Vec::len);
                }
            }
        }
        n
    }

    /// Saves every node's log as evidence and names the files in the row.
    async fn failed(&self, mut row: Row) -> Row {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("containers");
        let _ = std::fs::create_dir_all(&dir);
        for (i, s) in self.project.services.iter().enumerate() {
            let path = dir.join(format!("{}-{}.log", row.scenario, s.name));
            let _ = std::fs::write(&path, self.project.logs(i, 2000).await);
        }
        row.problems.push(format!(
            "node logs: {}/{}-node*.log",
            dir.display(),
            row.scenario
        ));
        row
    }

    /// Injects the scenario's fault and heals it; returns what it did.
    async fn nemesis(
        &mut self,
        scenario: Scenario,
        rng: &mut Rng,
        running: &Running,
        busy: &str,
    ) -> Result<String, String> {
        let w = self.writer_of(busy).await?;
        let f = self.other(rng, &[w]);
        let p = &self.project;
        let secs = HOLD.as_secs();
        Ok(match scenario {
            PartitionFollower => {
                p.disconnect(f).await?;
                tokio::time::sleep(HOLD).await;
                p.connect(f).await?;
                format!("follower {} cut off {secs} s", self.name(f))
            }
            PartitionWriter => {
                p.disconnect(w).await?;
                let (tried, acked) = self.zombie_appends(w, busy, running, HOLD).await;
                self.project.connect(w).await?;
                format!(
                    "writer {} cut off {secs} s, {tried} appends on it, {acked} acknowledged",
                    self.name(w)
                )
            }
            FlappingLink => {
                let end = Instant::now() + FLAP_FOR;
                let mut flaps = 0;
                while Instant::now() < end {
                    p.disconnect(w).await?;
                    tokio::time::sleep(rng.millis(200, 700)).await;
                    p.connect(w).await?;
                    tokio::time::sleep(rng.millis(200, 700)).await;
                    flaps += 1;
                }
                format!("writer {}'s link down {flaps} times", self.name(w))
            }
            KillWriter | KillFollower => {
                let v = if scenario == KillWriter { w } else { f };
                p.act(&["kill"], v).await?;
                tokio::time::sleep(HOLD).await;
                p.act(&["start"], v).await?;
                format!("{} killed for {secs} s", self.name(v))
            }
            FreezeWriter => {
                p.act(&["pause"], w).await?;
                tokio::time::sleep(HOLD).await;
                p.act(&["unpause"], w).await?;
                let (tried, acked) = self
                    .zombie_appends(w, busy, running, Duration::from_secs(2))
                    .await;
                format!(
                    "writer {} paused {secs} s, {tried} appends on it after, {acked} acknowledged",
                    self.name(w)
                )
            }
            RollingRestart => {
                for i in 0..self.n() {
                    p.act(&["restart", "-t", "10"], i).await?;
                    p.wait_healthy(i, SETTLE).await?;
                    self.wait_members_alive().await?;
                }
                "every node restarted in turn".into()
            }
            Wipe => {
                self.project.wipe(f).await?;
                format!("{} wiped and recreated", self.name(f))
            }
            KillTwoOfFive => {
                let second = self.other(rng, &[w]);
                p.act(&["kill"], w).await?;
                p.act(&["kill"], second).await?;
                tokio::time::sleep(HOLD).await;
                p.act(&["start"], w).await?;
                p.act(&["start"], second).await?;
                format!(
                    "{} and {} killed for {secs} s",
                    self.name(w),
                    self.name(second)
                )
            }
        })
    }

    /// Appends to `ctx` on node `i` itself, from inside its container, for `span`: what a
    /// client still connected to a cut-off or frozen writer would do. Each is recorded in the
    /// history (acknowledged ones must then be in the final log).
    async fn zombie_appends(
        &self,
        i: usize,
        ctx: &str,
        running: &Running,
        span: Duration,
    ) -> (u32, u32) {
        let c = ctx
            .rsplit_once('-')
            .and_then(|(_, c)| c.parse().ok())
            .unwrap_or(0);
        let addr = format!("http://127.0.0.1:{CLUSTER_GRPC_PORT}");
        let (mut tried, mut acked) = (0, 0);
        let end = Instant::now() + span;
        while Instant::now() < end {
            let payload = format!("zombie-{}-{tried}", self.name(i));
            tried += 1;
            let out = self
                .project
                .exec(
                    i,
                    &["append", "--addr", &addr, ctx, "facts", &payload, "--json"],
                    APPEND_TIMEOUT,
                )
                .await;
            let seq = out
                .ok()
                .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                .and_then(|v| v["sequence"].as_u64());
            if seq.is_some() {
                acked += 1;
            }
            running.record(c, payload, seq);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (tried, acked)
    }
}

// --- The image agrees with deploy/Dockerfile's runtime stage ---------------------------------

/// The settings of the Dockerfile's runtime stage, as `docker image inspect` shows them.
fn runtime_settings(dockerfile: &str) -> serde_json::Value {
    let stage: Vec<&str> = dockerfile
        .lines()
        .skip_while(|l| !(l.starts_with("FROM ") && l.ends_with(" AS runtime")))
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .collect();
    assert!(
        !stage.is_empty(),
        "deploy/Dockerfile has no `FROM … AS runtime` stage"
    );
    let mut env = Vec::new();
    let mut v = serde_json::json!({});
    let json_array =
        |s: &str| -> serde_json::Value { serde_json::from_str(s.trim()).expect("exec form") };
    for line in stage {
        let Some((op, rest)) = line.split_once(' ') else {
            continue;
        };
        match op {
            "ENV" => env.push(rest.trim().to_owned()),
            "USER" => v["User"] = rest.trim().into(),
            "WORKDIR" => v["WorkingDir"] = rest.trim().into(),
            "ENTRYPOINT" => v["Entrypoint"] = json_array(rest),
            "CMD" => v["Cmd"] = json_array(rest),
            "VOLUME" => {
                let vols: Vec<String> = serde_json::from_value(json_array(rest)).expect("volumes");
                v["Volumes"] = vols
                    .into_iter()
                    .map(|p| (p, serde_json::json!({})))
                    .collect();
            }
            "EXPOSE" => {
                v["ExposedPorts"] = rest
                    .split_whitespace()
                    .map(|p| (p.to_owned(), serde_json::json!({})))
                    .collect();
            }
            "HEALTHCHECK" => {
                let (flags, cmd) = rest.split_once(" CMD ").expect("HEALTHCHECK … CMD […]");
                let mut test = vec![serde_json::json!("CMD")];
                test.extend(json_array(cmd).as_array().expect("array").iter().cloned());
                let mut h = serde_json::json!({"Test": test});
                for flag in flags.split_whitespace() {
                    let (k, val) = flag
                        .trim_start_matches("--")
                        .split_once('=')
                        .expect("--flag=value");
                    let ns = |s: &str| {
                        s.trim_end_matches('s').parse::<u64>().expect("seconds") * 1_000_000_000
                    };
                    match k {
                        "interval" => h["Interval"] = ns(val).into(),
                        "timeout" => h["Timeout"] = ns(val).into(),
                        "start-period" => h["StartPeriod"] = ns(val).into(),
                        "retries" => h["Retries"] = val.parse::<u64>().expect("retries").into(),
                        other => panic!("HEALTHCHECK flag {other} not compared"),
                    }
                }
                v["Healthcheck"] = h;
            }
            _ => {}
        }
    }
    v["Env"] = env.into();
    v
}

#[tokio::test]
async fn image_has_the_dockerfile_runtime_user_ports_volume_health_check_and_entrypoint() {
    if let Err(why) = prerequisites().await {
        return skip(&why);
    }
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let want = runtime_settings(&dockerfile);
    let got: serde_json::Value = serde_json::from_str(
        &docker(&["image", "inspect", "-f", "{{json .Config}}", IMAGE])
            .await
            .expect("inspect"),
    )
    .expect("json");
    for key in [
        "User",
        "WorkingDir",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "ExposedPorts",
        "Healthcheck",
    ] {
        assert!(!want[key].is_null(), "the runtime stage sets no {key}");
        assert_eq!(got[key], want[key], "{key}: image vs deploy/Dockerfile");
    }
    for e in want["Env"].as_array().expect("env") {
        assert!(
            got["Env"].as_array().expect("env").contains(e),
            "ENV {e} of deploy/Dockerfile is not in the image: {}",
            got["Env"]
        );
    }
    // The user exists under the uid both use, and the binary runs with the libraries shipped.
    let uid = want["User"]
        .as_str()
        .expect("user")
        .split(':')
        .next()
        .expect("uid")
        .to_owned();
    assert!(
        dockerfile.contains(&format!("--uid {uid} ")),
        "the Dockerfile's useradd makes uid {uid}"
    );
    let id = docker(&["create", IMAGE]).await.expect("create");
    let passwd = docker(&["cp", &format!("{id}:/etc/passwd"), "-"]).await;
    let _ = docker(&["rm", "-v", &id]).await;
    let passwd = passwd.expect("copy /etc/passwd");
    assert!(
        passwd.contains(&format!("ledger:x:{uid}:{uid}:")),
        "/etc/passwd of the image: {passwd}"
    );
    let version = docker(&["run", "--rm", IMAGE, "--version"])
        .await
        .expect("run --version");
    assert!(version.starts_with("converge-ledger "), "{version}");
}

#[test]
fn runtime_settings_are_read_from_the_dockerfile() {
    let v = runtime_settings(
        &std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile"),
    );
    assert_eq!(v["Entrypoint"], serde_json::json!(["converge-ledger"]));
    assert_eq!(
        v["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "converge-ledger", "health"])
    );
    assert!(
        v["ExposedPorts"].get("50051/tcp").is_some() && v["ExposedPorts"].get("7946/udp").is_some()
    );
    assert_eq!(v["Volumes"], serde_json::json!({"/data": {}}));
}
