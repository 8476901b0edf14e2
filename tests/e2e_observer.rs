//! The observer page in a real headless browser (Debian's chromium, driven over WebDriver by
//! chromedriver): it loads, verifies the signed tree head against the pinned key, shows an
//! append made through gRPC in the live tail within a second, and fails the badge when a
//! tampered head is served. Screenshots go to `$LEDGER_SCREENSHOTS` when set (docs/ holds the
//! committed ones).
//!
//! Without chromium and chromedriver (`scripts/browser.sh` installs them) the test prints that
//! it skipped and why, and passes.

mod support;

use fantoccini::{ClientBuilder, Locator};
use ledger_core::Metadata;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Node, data_dir};

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(
    c: &fantoccini::Client,
    css: &str,
    within: Duration,
) -> Result<fantoccini::elements::Element, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return Ok(e);
        }
        if Instant::now() > deadline {
            let badge = match c.find(Locator::Css("#badge")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            return Err(format!(
                "{css} did not appear within {within:?} (badge: {badge:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn screenshot(c: &fantoccini::Client, name: &str) {
    let Some(dir) = std::env::var_os("LEDGER_SCREENSHOTS") else {
        return;
    };
    if let Ok(png) = c.screenshot().await {
        let _ = std::fs::write(PathBuf::from(dir).join(name), png);
    }
}

/// Wraps the page's fetch so every signed tree head it receives has one bit of its root
/// flipped (checkpoint text updated to match, signature left as it was).
const TAMPER: &str = r#"
const orig = window.fetch;
window.fetch = async (u, o) => {
  const r = await orig(u, o);
  if (!String(u).includes('/api/head')) return r;
  const j = await r.json();
  const b = atob(j.root);
  j.root = btoa(String.fromCharCode(b.charCodeAt(0) ^ 1) + b.slice(1));
  j.checkpoint = `${j.key_name}/${j.context_id}\n${j.tree_size}\n${j.root}\n`;
  return new Response(JSON.stringify(j), { status: 200, headers: { 'content-type': 'application/json' } });
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_page_tails_live_and_verifies_heads_in_a_real_browser() {
    let (Some(chromedriver), Some(chromium)) = (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser"]),
    ) else {
        eprintln!(
            "SKIPPED observer browser test: chromium and chromedriver are not installed \
             (scripts/browser.sh installs Debian's chromium and chromium-driver)"
        );
        return;
    };
    let dir = data_dir();
    let node = Node::start(
        &dir.path().join("data"),
        &[
            "--admin-addr",
            "127.0.0.1:0",
            "--ledger-name",
            "observer-demo",
        ],
    );
    let admin = node.listening["admin_addr"].as_str().unwrap().to_owned();
    let key = node.listening["public_key"].as_str().unwrap().to_owned();
    let c = node.client().await;
    for (i, p) in [
        r#"{"fact":"the sky is blue","confidence":0.9}"#,
        "plain text note",
        r#"{"step":3,"tool":"search"}"#,
    ]
    .iter()
    .enumerate()
    {
        let key = if i == 1 { "notes" } else { "facts" };
        c.append(
            "agent-run/42",
            key,
            p.as_bytes().to_vec(),
            Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }

    let port = support::free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,900"],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("cannot start a browser session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };

    let url = format!(
        "http://{admin}/#context={}&key={}",
        "agent-run%2F42",
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    client.goto(&url).await.unwrap();
    wait_for(
        &client,
        "#contexts li[data-context='agent-run/42']",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    wait_for(
        &client,
        "#entries tbody tr[data-seq='3']",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    wait_for(
        &client,
        "#badge[data-state='verified']",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    wait_for(&client, "#tail-state", Duration::from_secs(1))
        .await
        .unwrap();
    // The tail is connected before we append (its state turns "live").
    let live = Instant::now() + Duration::from_secs(10);
    while client
        .find(Locator::Css("#tail-state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        != "live"
    {
        assert!(Instant::now() < live, "the live tail connects");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An append through gRPC shows in the live tail within a second.
    let appended = Instant::now();
    c.append(
        "agent-run/42",
        "facts",
        br#"{"fact":"appended while watching"}"#.to_vec(),
        Metadata::new(),
        None,
    )
    .await
    .unwrap();
    wait_for(&client, "#tail li[data-seq='4']", Duration::from_secs(1))
        .await
        .unwrap();
    let seen_after = appended.elapsed();
    assert!(seen_after < Duration::from_secs(1), "{seen_after:?}");
    eprintln!("live tail: entry 4 shown {seen_after:?} after the append returned");
    // The badge follows the new head (4 entries) and stays verified.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let badge = client.find(Locator::Css("#badge")).await.unwrap();
        let (state, text) = (
            badge.attr("data-state").await.unwrap().unwrap_or_default(),
            badge.text().await.unwrap(),
        );
        if state == "verified" && text.contains("4 entries") {
            break;
        }
        assert!(Instant::now() < deadline, "badge: {state} {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The inclusion proof of a selected entry verifies in the browser.
    client
        .find(Locator::Css("#entries tbody tr[data-seq='2']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        &client,
        "#proof[data-state='verified']",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    screenshot(&client, "observer.png").await;

    // A tampered head is refused.
    client.execute(TAMPER, vec![]).await.unwrap();
    client
        .find(Locator::Css("#verify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let failed = wait_for(
        &client,
        "#badge[data-state='failed']",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let text = failed.text().await.unwrap();
    assert!(text.contains("FAILED"), "{text}");
    screenshot(&client, "observer-tampered.png").await;
    client.close().await.unwrap();
}
