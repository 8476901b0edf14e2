//! `converge-ledger certs dev --out DIR [--name HOST]...`: a throwaway CA and certificates for
//! compose files and tests (rcgen), never for production.
//!
//! Writes `ca.pem` (the CA certificate; its key is not kept, so nothing more can be signed
//! with it), `node.pem`/`node.key` (server and client use: every node presents it on its port
//! and to its peers; it covers `localhost`, `127.0.0.1` and every `--name`) and
//! `client.pem`/`client.key` (client use only: for CLIs and engines when nodes ask for client
//! certificates). Keys are ECDSA P-256, written with mode 0600.

use crate::error::CliError;
use crate::output::out_line;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// A throwaway CA, a node certificate (localhost, 127.0.0.1 and every --name) and a client
    /// certificate: ca.pem node.pem node.key client.pem client.key
    Dev {
        /// Directory to write into (created if missing)
        #[arg(long)]
        out: PathBuf,
        /// Another DNS name or IP address the node certificate covers (repeatable)
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
}

/// Writes the certificates and prints the path of each file written.
pub fn run(what: CertsCommand) -> Result<(), CliError> {
    let CertsCommand::Dev { out, names } = what;
    for p in dev(&out, &names)? {
        out_line(&p.display().to_string())?;
    }
    Ok(())
}

/// The files written, in order.
pub const FILES: [&str; 5] = ["ca.pem", "node.pem", "node.key", "client.pem", "client.key"];

/// First year of validity (fixed: the build knows no clock; earlier is harmless).
const YEAR_FROM: i32 = 2024;
/// Years the certificates are valid.
const VALID_YEARS: i32 = 10;

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make the {what}: {e}")
}

fn params(
    names: Vec<String>,
    common_name: &str,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(names).map_err(err(common_name))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "converge-ledger dev");
    p.distinguished_name = dn;
    // Valid for years from today's date: a throwaway CA should not expire in the middle of a
    // test run, nor live forever.
    p.not_before = rcgen::date_time_ymd(YEAR_FROM, 1, 1);
    p.not_after = rcgen::date_time_ymd(YEAR_FROM + VALID_YEARS, 1, 1);
    p.extended_key_usages = usages;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    Ok(p)
}

/// Writes the CA, node and client certificates into `out` (created if missing). Returns the
/// paths written.
pub fn dev(out: &Path, extra_names: &[String]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let ca_key = KeyPair::generate().map_err(err("CA key"))?;
    let mut ca_params = params(Vec::new(), "converge-ledger dev CA", Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err("CA"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let node_key = KeyPair::generate().map_err(err("node key"))?;
    let node = params(
        names,
        "converge-ledger node",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?
    .signed_by(&node_key, &issuer)
    .map_err(err("node certificate"))?;

    let client_key = KeyPair::generate().map_err(err("client key"))?;
    let client = params(
        Vec::new(),
        "converge-ledger client",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?
    .signed_by(&client_key, &issuer)
    .map_err(err("client certificate"))?;

    let contents = [
        (FILES[0], ca_cert.pem(), false),
        (FILES[1], node.pem(), false),
        (FILES[2], node_key.serialize_pem(), true),
        (FILES[3], client.pem(), false),
        (FILES[4], client_key.serialize_pem(), true),
    ];
    let mut written = Vec::new();
    for (name, pem, secret) in contents {
        let path = out.join(name);
        write(&path, pem.as_bytes(), secret)?;
        written.push(path);
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
