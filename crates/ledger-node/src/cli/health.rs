//! `converge-ledger health [--addr] [--service]`: asks a node's `grpc.health.v1.Health/Check`,
//! the check container runtimes and Kubernetes probes run (the image's HEALTHCHECK, the compose
//! file and the Helm chart use it), so no separate probe tool is needed in the image.

use crate::error::CliError;
use crate::output::out_line;
use crate::target::Target;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    target: Target,
    /// The service to check; "" (default) is the whole server: a cluster member turns
    /// SERVING once it has joined and compared its contexts with its peers
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this many milliseconds (connect and answer)
    #[arg(long, default_value_t = 3_000)]
    timeout_ms: u64,
}

/// Prints `SERVING`, or fails with what the node said.
pub async fn run(args: HealthArgs) -> Result<(), CliError> {
    let status = check(
        &args.target.addr,
        &args.service,
        Duration::from_millis(args.timeout_ms),
    )
    .await?;
    out_line(status)
}

/// Checks `service` ("" = the whole server) on the node at `addr` within `timeout`: `Ok("SERVING")`,
/// or an error naming what the node said (NOT_SERVING, unknown service) or why it could not be
/// asked (refused, timed out).
pub async fn check(addr: &str, service: &str, timeout: Duration) -> Result<&'static str, CliError> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let what = if service.is_empty() {
        addr.to_owned()
    } else {
        format!("{addr} service {service:?}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let ask = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("{what}: cannot connect: {}", root_cause(&e)))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => format!("{what}: unknown service"),
                _ => format!("{what}: {}: {}", s.code(), s.message()),
            })
    };
    let status = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("{what}: no answer within {} ms", timeout.as_millis()))??;
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok("SERVING"),
        Ok(other) => Err(CliError::Message(format!(
            "{what}: {}",
            other.as_str_name()
        ))),
        Err(_) => Err(CliError::Message(format!(
            "{what}: unknown status {status}"
        ))),
    }
}

/// The innermost error of a chain (tonic's transport errors say "transport error" on top).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(inner) = e.source() {
        e = inner;
    }
    e.to_string()
}
