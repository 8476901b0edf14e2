//! Every setting the deployment files pass to the node is one the node accepts, with a value it
//! accepts: a renamed or removed setting (or command-line option) breaks this test, not a
//! user's cluster. Covers deploy/Dockerfile, deploy/compose, the suite's compose overrides and
//! the Helm chart (its `config:` values and templates; rendered with `helm template` when helm
//! is at hand: on the PATH, `$LEDGER_HELM`, or where deploy/helm/get-helm.sh puts it).
//! The compose files are also checked by `docker compose config` / `docker-compose config`
//! where Compose is installed.

mod support;

use clap::Parser;
use ledger_node::cli::Cli;
use ledger_server::config::{Config, ENV_KEYS, Overrides};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::containers::repo;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn files(dir: &str, ext: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// `LEDGER_KEY` → `key` when it names a setting of the node.
fn setting(var: &str) -> Option<String> {
    let key = var.strip_prefix("LEDGER_")?.to_ascii_lowercase();
    ENV_KEYS.contains(&key.as_str()).then_some(key)
}

/// `${NAME:-default}` → `default`, `${NAME}` → `fallback` (compose interpolation).
fn interpolate(value: &str, fallback: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing }") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or(fallback, |(_, d)| d));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Kubernetes `$(VAR)` references → values a pod would have.
fn pod_values(value: &str) -> String {
    value
        .replace("$(POD_NAME)", "demo-converge-ledger-0")
        .replace("$(POD_NAMESPACE)", "ledger")
        .replace("$(POD_IP)", "127.0.0.1")
}

/// The node's configuration with exactly these `LEDGER_*` variables set.
// figment::Jail closures return figment::Error, which is large; fine in tests.
#[allow(clippy::result_large_err)]
fn load(vars: &[(String, String)]) -> Result<Config, String> {
    let mut result = None;
    figment::Jail::expect_with(|jail| {
        for (k, v) in vars {
            jail.set_env(k, v);
        }
        result = Some(Config::load(None, &Overrides::default()));
        Ok(())
    });
    result.expect("jail ran")
}

/// `KEY: value` pairs of the `environment:` mappings of a compose file (LEDGER_* keys only).
fn compose_environment(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<(String, String)>)> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if let Some((at, vars)) = &mut current {
            if !t.is_empty() && indent <= *at {
                blocks.push(std::mem::take(vars));
                current = None;
            } else if let Some((k, v)) = t.split_once(':')
                && k.starts_with("LEDGER_")
            {
                vars.push((k.to_owned(), v.trim().trim_matches('"').to_owned()));
                continue;
            } else {
                continue;
            }
        }
        // `environment:` of a service, or an `x-…-env: &anchor` mapping merged into them.
        if t == "environment:" || (t.starts_with("x-") && t.contains("env: &")) {
            current = Some((indent, Vec::new()));
        }
    }
    if let Some((_, vars)) = current {
        blocks.push(vars);
    }
    blocks.retain(|b| !b.is_empty());
    blocks
}

#[test]
fn compose_files_set_only_settings_the_node_accepts() {
    let mut checked = 0;
    for path in files("deploy/compose", "yml")
        .into_iter()
        .chain(files("tests/containers", "yml"))
    {
        let text = read(&path);
        for block in compose_environment(&text) {
            let mut vars = Vec::new();
            for (k, v) in &block {
                assert!(
                    setting(k).is_some(),
                    "{path}: {k} is not a setting of the node"
                );
                vars.push((k.clone(), interpolate(v, "10.1.2")));
            }
            // Overrides add to the base file's variables; the base's alone must load too.
            load(&vars).unwrap_or_else(|e| panic!("{path}: {vars:?}: {e}"));
            checked += vars.len();
        }
        assert!(
            !text.contains("LEDGER_") || checked > 0,
            "{path}: no environment found"
        );
    }
    assert!(checked > 20, "found {checked} settings only");
}

/// The `config:` block of the chart's values.yaml: `key: value` per node setting.
fn chart_config() -> Vec<(String, String)> {
    let values = read("deploy/helm/converge-ledger/values.yaml");
    let mut out = Vec::new();
    let mut inside = false;
    for line in values.lines() {
        if line == "config:" {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with(' ') && !line.trim().is_empty() {
                break;
            }
            let t = line.trim();
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
            let (k, v) = t.split_once(':').expect("key: value");
            out.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
        }
    }
    out
}

#[test]
fn helm_chart_sets_only_settings_the_node_accepts() {
    let config = chart_config();
    assert!(config.len() >= 5, "values.yaml config: {config:?}");
    let mut vars: Vec<(String, String)> = Vec::new();
    for (k, v) in &config {
        let var = format!("LEDGER_{}", k.to_ascii_uppercase());
        assert!(
            setting(&var).is_some(),
            "values.yaml config.{k} is not a setting of the node"
        );
        vars.push((var, v.clone()));
    }
    // The variables the templates set from the pod.
    let template = read("deploy/helm/converge-ledger/templates/statefulset.yaml");
    let lines: Vec<&str> = template.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("- name: ") else {
            continue;
        };
        // `LEDGER_{{ $key | upper }}` are the values' config keys, checked above.
        if !name.starts_with("LEDGER_") || name.contains("{{") {
            continue;
        }
        assert!(
            setting(name).is_some(),
            "statefulset.yaml sets {name}, not a setting of the node"
        );
        if let Some(value) = lines
            .get(i + 1)
            .and_then(|l| l.trim().strip_prefix("value: "))
        {
            let value = value.trim_matches('"');
            let value = value
                .replace(
                    "{{ include \"converge-ledger.headless\" . }}",
                    "demo-converge-ledger-headless",
                )
                .replace("{{ .Values.clusterDomain }}", "cluster.local")
                .replace("{{ .Values.ports.grpc }}", "50051")
                .replace("{{ .Values.ports.gossip }}", "7946")
                .replace("{{ .Values.ports.grpc | quote }}", "50051");
            assert!(
                !value.contains("{{"),
                "{name}: {value}: add its template to this test"
            );
            vars.push((name.to_owned(), pod_values(&value)));
        }
    }
    load(&vars).unwrap_or_else(|e| panic!("the chart's defaults: {vars:?}: {e}"));
}

/// `{{ … }}` template actions replaced by `x`.
fn without_templates(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        out.push('x');
        rest = rest[start..]
            .find("}}")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    out.push_str(rest);
    out
}

#[test]
fn commands_in_deployment_files_parse() {
    // Exec-form commands: ["converge-ledger", …], and `serve` given as args to the entrypoint.
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut sources = vec!["deploy/Dockerfile".to_owned()];
    sources.extend(files("deploy/compose", "yml"));
    sources.extend(files("deploy/helm/converge-ledger/templates", "yaml"));
    sources.extend(files("deploy/helm/converge-ledger/templates", "tpl"));
    sources.extend(files("deploy/helm/converge-ledger/templates/tests", "yaml"));
    for path in &sources {
        for line in read(path).lines() {
            let Some(start) = line.find('[') else {
                continue;
            };
            let Some(end) = line.rfind(']') else { continue };
            let array = without_templates(&line[start..=end]);
            let Ok(args) = serde_json::from_str::<Vec<String>>(&array) else {
                continue;
            };
            let args: Vec<String> = match args.first().map(String::as_str) {
                // The entrypoint alone; its arguments are CMD / args.
                Some("converge-ledger") if args.len() == 1 => continue,
                Some("converge-ledger") => args,
                Some("CMD") if args.get(1).is_some_and(|a| a == "converge-ledger") => {
                    args[1..].to_vec()
                }
                Some("serve" | "health")
                    if line.contains("args:")
                        || line.contains("command:")
                        || line.starts_with("CMD ") =>
                {
                    std::iter::once("converge-ledger".to_owned())
                        .chain(args)
                        .collect()
                }
                _ => continue,
            };
            commands.push(args);
        }
    }
    assert!(commands.len() >= 5, "{commands:?}");
    for c in &commands {
        if let Err(e) = Cli::try_parse_from(c) {
            panic!("{c:?} does not parse: {e}");
        }
    }
}

#[test]
fn the_image_sets_only_settings_the_node_accepts() {
    let dockerfile = read("deploy/Dockerfile");
    let mut vars = Vec::new();
    for line in dockerfile.lines() {
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.split_once('=').expect("ENV KEY=value");
            assert!(
                setting(k).is_some(),
                "deploy/Dockerfile sets {k}, not a setting of the node"
            );
            vars.push((k.to_owned(), v.to_owned()));
        }
    }
    load(&vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"));
}

/// helm, if this machine has it.
fn helm() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LEDGER_HELM").map(PathBuf::from),
        Some(PathBuf::from("helm")),
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/converge-ledger/helm/helm")),
    ];
    candidates.into_iter().flatten().find(|h| {
        Command::new(h)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn helm_run(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn helm_chart_lints_and_renders_settings_the_node_accepts() {
    let Some(helm) = helm() else {
        println!(
            "helm is not installed: the chart was checked without rendering (deploy/helm/get-helm.sh fetches helm)"
        );
        return;
    };
    let chart = "deploy/helm/converge-ledger";
    helm_run(&helm, &["lint", "--strict", chart]);
    for extra in [
        &[][..],
        &["--set", "probes.type=exec"],
        &["--set", "config.ack=all,replicaCount=5"],
    ] {
        let mut args = vec!["template", "demo", chart, "--namespace", "ledger"];
        args.extend_from_slice(extra);
        let rendered = helm_run(&helm, &args);
        for kind in [
            "StatefulSet",
            "Service",
            "PodDisruptionBudget",
            "ServiceAccount",
        ] {
            assert!(
                rendered.contains(&format!("kind: {kind}\n")),
                "no {kind} rendered"
            );
        }
        assert!(
            rendered.contains("clusterIP: None")
                && rendered.contains("publishNotReadyAddresses: true")
        );
        assert!(
            rendered.contains("readOnlyRootFilesystem: true")
                && rendered.contains("runAsNonRoot: true")
        );
        let lines: Vec<&str> = rendered.lines().collect();
        let mut vars = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line.trim().strip_prefix("- name: ") else {
                continue;
            };
            if !name.starts_with("LEDGER_") {
                continue;
            }
            assert!(
                setting(name).is_some(),
                "rendered {name} is not a setting of the node"
            );
            let value = lines[i + 1]
                .trim()
                .strip_prefix("value: ")
                .expect("value")
                .trim_matches('"');
            vars.push((name.to_owned(), pod_values(value)));
        }
        let config = load(&vars).unwrap_or_else(|e| panic!("rendered {extra:?}: {vars:?}: {e}"));
        assert_eq!(config.data_dir, PathBuf::from("/data"));
        if extra.contains(&"probes.type=exec") {
            assert!(
                rendered.contains("command: [\"converge-ledger\", \"health\""),
                "exec probes"
            );
        } else {
            assert!(
                rendered.contains("grpc:\n              port: 50051"),
                "gRPC probes"
            );
        }
    }
}

#[test]
fn compose_files_are_valid_for_compose() {
    let compose: Option<Vec<&str>> = [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|c| {
            Command::new(c[0])
                .args(&c[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(compose) = compose else {
        println!(
            "neither `docker compose` nor `docker-compose` is installed: compose files not validated"
        );
        return;
    };
    let dir = repo().join("deploy/compose");
    for files in [
        &["docker-compose.yml"][..],
        &["docker-compose.yml", "docker-compose.five.yml"],
    ] {
        for profile in [None, Some("mirror")] {
            let mut cmd = Command::new(compose[0]);
            cmd.args(&compose[1..]).current_dir(&dir);
            for f in files {
                cmd.args(["-f", f]);
            }
            if let Some(p) = profile {
                cmd.args(["--profile", p]);
            }
            let out = cmd
                .args(["config", "--services"])
                .output()
                .expect("compose config");
            assert!(
                out.status.success(),
                "{files:?} {profile:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let services = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                ["node1", "node2", "node3"]
                    .iter()
                    .all(|s| services.contains(s)),
                "{services}"
            );
            // (`docker-compose` 1.29 lists profiled services with or without their profile.)
            if profile.is_some() {
                assert!(services.contains("mirror"), "{services}");
            }
        }
    }
}
