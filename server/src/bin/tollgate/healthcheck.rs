//! `tollgate healthcheck`: a container health check for images without curl.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args)]
pub(crate) struct Healthcheck {
    /// The port of the service (or of an app serving `/health`) on this host.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,

    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Exit 0 when `GET /health` on `127.0.0.1:PORT` answers 200 within the timeout, 1
/// otherwise, with the reason on stderr.
pub(crate) fn healthcheck(args: &Healthcheck) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return unhealthy(&format!("cannot start the runtime: {error}")),
    };
    let probe =
        runtime.block_on(async { tokio::time::timeout(args.timeout, status(args.port)).await });
    match probe {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => unhealthy(&format!("/health answered {status}")),
        Ok(Err(message)) => unhealthy(&message),
        Err(_) => unhealthy(&format!(
            "no answer from /health within {}",
            humantime::format_duration(args.timeout)
        )),
    }
}

fn unhealthy(reason: &str) -> ExitCode {
    eprintln!("unhealthy: {reason}");
    ExitCode::FAILURE
}

/// The status code of `GET /health` on `127.0.0.1:port`.
async fn status(port: u16) -> Result<u16, String> {
    let address = format!("127.0.0.1:{port}");
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {address}: {e}"))?;
    // The status line is all we need: "HTTP/1.1 200 OK\r\n".
    let mut head = Vec::new();
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read from {address}: {e}"))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/") => Ok(status),
        _ => Err(format!("{address} did not answer HTTP")),
    }
}
