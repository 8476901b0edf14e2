//! Loading a node's configuration: defaults ← TOML file (`--config`) ← environment
//! (`GRPC_PORT`, then `LEDGER_*`) ← command-line flags, then validation. Errors name the
//! setting and where its value came from.

use super::cluster::{is_clustered, validate_cluster};
use super::flags::Overrides;
use super::schema::{Config, ENV_KEYS};
use crate::identity::validate_node_id;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use std::path::Path;

/// One figment error as "invalid setting <name>: <problem> (from <source>)".
fn describe(e: figment::Error) -> String {
    let source = e.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
        _ => m.name.to_string(),
    });
    let from = source.map(|s| format!(" (from {s})")).unwrap_or_default();
    if e.path.is_empty() {
        format!("invalid configuration: {}{from}", e.kind)
    } else {
        let setting = e.path.join(".").to_lowercase();
        format!("invalid setting {setting}: {}{from}", e.kind)
    }
}

impl Config {
    /// Resolves the configuration from every source, in precedence order, and validates it.
    /// Errors name the setting and where it came from.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // GRPC_PORT is the old ledger's variable; LEDGER_PORT wins when both are set.
        let grpc_port = Env::raw().only(&["GRPC_PORT"]).map(|_| "port".into());
        let prefixed = Env::prefixed("LEDGER_").only(ENV_KEYS);
        fig = fig
            .merge(grpc_port)
            .merge(prefixed)
            .merge(Serialized::defaults(flags));
        let config: Config = fig
            .extract()
            .map_err(|e| e.into_iter().map(describe).collect::<Vec<_>>().join("\n"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let bad = |setting: &str, why: String| Err(format!("invalid setting {setting}: {why}"));
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes", "must be at least 1".into());
        }
        if self.max_batch_items == 0 || self.max_batch_bytes == 0 {
            return bad(
                "max_batch_items/max_batch_bytes",
                "must be at least 1".into(),
            );
        }
        if self.max_response_bytes < 1024 {
            return bad(
                "max_response_bytes",
                format!("{} is below the minimum of 1024", self.max_response_bytes),
            );
        }
        if self.max_message_bytes < self.max_payload_bytes + (64 << 10) {
            return bad(
                "max_message_bytes",
                format!(
                    "{} must exceed max_payload_bytes ({}) by at least 65536 so an append fits",
                    self.max_message_bytes, self.max_payload_bytes
                ),
            );
        }
        if self.max_message_bytes < self.max_response_bytes {
            return bad(
                "max_message_bytes",
                format!(
                    "{} is smaller than max_response_bytes ({})",
                    self.max_message_bytes, self.max_response_bytes
                ),
            );
        }
        for (setting, v) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
        ] {
            if v == 0 {
                return bad(setting, "must be at least 1".into());
            }
        }
        if let Some(id) = &self.node_id {
            validate_node_id(id)?;
        }
        validate_cluster(self)?;
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams", "must be at least 1".into());
        }
        for (setting, v) in [
            ("max_watchers", self.max_watchers),
            ("max_watchers_per_context", self.max_watchers_per_context),
            ("max_append_streams", self.max_append_streams),
            ("append_stream_window", self.append_stream_window),
        ] {
            if v == 0 {
                return bad(setting, "must be at least 1".into());
            }
        }
        if self.max_load_bytes == 0 {
            return bad("max_load_bytes", "must be at least 1".into());
        }
        self.validate_security()?;
        if self.watch_buffer == 0 || self.queue_depth == 0 {
            return bad("watch_buffer/queue_depth", "must be at least 1".into());
        }
        if self.ledger_name.is_empty()
            || !self
                .ledger_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad(
                "ledger_name",
                format!(
                    "{:?} must be non-empty and use only letters, digits, '.', '_' and '-'",
                    self.ledger_name
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return bad(
                "log_level",
                format!("{:?} is not a valid tracing filter", self.log_level),
            );
        }
        Ok(())
    }

    /// TLS and admin settings that only make sense together.
    fn validate_security(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(
                    "invalid setting tls_key: tls_cert is set, so its key is needed too".into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "invalid setting tls_cert: tls_key is set, so its certificate is needed too"
                        .into(),
                );
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("invalid setting tls_client_ca: client certificates need TLS; set tls_cert and tls_key too".into());
        }
        if self.tls_cert.is_some() && self.tls_client_ca.is_none() && is_clustered(self) {
            return Err("invalid setting tls_client_ca: a cluster with TLS needs it, so nodes can verify each other's certificates (mutual TLS between nodes)".into());
        }
        if let Some(k) = &self.gossip_key {
            k.parse::<ledger_discovery::GossipKey>()
                .map_err(|e| format!("invalid setting gossip_key: {e}"))?;
        }
        if let Some(a) = &self.admin_addr {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!(
                    "invalid setting admin_addr: {a:?} is not host:port (port 0 picks a free port)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
// figment::Jail closures return figment::Error, which is large; fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::config::schema::{DurabilitySetting, LogFormat};
    use std::path::PathBuf;

    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(f());
            Ok(())
        });
        out.expect("jail ran")
    }

    #[test]
    fn defaults_are_the_embedded_default() {
        let c = with_env(&[], || Config::load(None, &Overrides::default()).unwrap());
        assert_eq!(c.port, 50051);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.durability, DurabilitySetting::Sync);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ledger.toml",
                "port = 7000\ndata_dir = \"/file\"\nlog_format = \"json\"\n",
            )?;
            let file = Path::new("ledger.toml");
            let c = Config::load(Some(file), &Overrides::default()).unwrap();
            assert_eq!((c.port, c.log_format), (7000, LogFormat::Json));
            jail.set_env("GRPC_PORT", "7100");
            assert_eq!(
                Config::load(Some(file), &Overrides::default())
                    .unwrap()
                    .port,
                7100
            );
            jail.set_env("LEDGER_PORT", "7200");
            jail.set_env("LEDGER_DATA_DIR", "/env");
            let c = Config::load(Some(file), &Overrides::default()).unwrap();
            assert_eq!((c.port, c.data_dir.clone()), (7200, PathBuf::from("/env")));
            let flags = Overrides {
                port: Some(7300),
                ..Default::default()
            };
            let c = Config::load(Some(file), &flags).unwrap();
            assert_eq!((c.port, c.data_dir), (7300, PathBuf::from("/env")));
            Ok(())
        });
    }

    #[test]
    fn every_setting_has_an_environment_variable() {
        let all = Config {
            signing_key_file: Some("k".into()),
            signing_key: Some("k".into()),
            node_id: Some("n".into()),
            advertise_addr: Some("a:1".into()),
            gossip_addr: Some("g:1".into()),
            admin_addr: Some("127.0.0.1:9090".into()),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            tls_client_ca: Some("ca".into()),
            gossip_key: Some("k".into()),
            auth_file: Some("a".into()),
            ..Config::default()
        };
        let json = serde_json::to_value(&all).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = ENV_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys, "ENV_KEYS lists exactly the settings");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = with_env(&[("LEDGER_PORT", "not-a-port")], || {
            Config::load(None, &Overrides::default()).unwrap_err()
        });
        assert!(e.contains("port"), "{e}");
        let e = with_env(&[("LEDGER_DURABILITY", "sometimes")], || {
            Config::load(None, &Overrides::default()).unwrap_err()
        });
        assert!(e.contains("durability"), "{e}");
        let e = with_env(&[], || {
            Config::load(
                None,
                &Overrides {
                    max_payload_bytes: Some(0),
                    ..Default::default()
                },
            )
            .unwrap_err()
        });
        assert!(e.contains("max_payload_bytes"), "{e}");
        // A gossip key that is not 16/24/32 bytes of base64 is refused with what to use
        // instead, without echoing the value.
        let e = with_env(&[("LEDGER_GOSSIP_KEY", "c2hvcnQ=")], || {
            Config::load(None, &Overrides::default()).unwrap_err()
        });
        assert!(
            e.contains("gossip_key") && e.contains("/dev/urandom"),
            "{e}"
        );
        assert!(!e.contains("c2hvcnQ="), "{e}");
        let ok = with_env(
            &[(
                "LEDGER_GOSSIP_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )],
            || Config::load(None, &Overrides::default()),
        );
        assert!(ok.is_ok(), "{ok:?}");
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "prot = 1\n")?;
            let e = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(e.contains("prot"), "{e}");
            Ok(())
        });
        let e = with_env(&[], || {
            Config::load(
                Some(Path::new("/nonexistent/ledger.toml")),
                &Overrides::default(),
            )
            .unwrap_err()
        });
        assert!(e.contains("does not exist"), "{e}");
    }
}
