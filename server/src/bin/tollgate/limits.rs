//! `tollgate serve`'s bounds on connections and on gRPC calls: their flags and environment
//! variables, turned into what the servers take.

use std::time::Duration;

use clap::Args;
use tollgate_server::grpc::RequestLimits;

use crate::server::Limits;

/// How long a connection may take over each step, on the HTTP and the gRPC port alike, and
/// how many may be open.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connections (both ports)")]
pub(crate) struct ConnectionArgs {
    /// A new connection must send its first request within this many milliseconds (HTTP/1:
    /// the request head; HTTP/2 and gRPC: the preface, settings and first request), else it
    /// is closed.
    #[arg(
        long,
        env = "HTTP_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    http_handshake_timeout_ms: u64,

    /// An HTTP/1 request head must arrive whole within this many milliseconds of its first
    /// byte (a client sending it byte by byte, "slowloris", is closed).
    #[arg(
        long,
        env = "HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    http_header_timeout_ms: u64,

    /// A request body must arrive whole within this many milliseconds of its head, else the
    /// answer is 408 and the connection is closed.
    #[arg(
        long,
        env = "HTTP_BODY_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    http_body_timeout_ms: u64,

    /// A connection with no request in flight for this many milliseconds is closed (HTTP/1
    /// keep-alive; HTTP/2 and gRPC get a GOAWAY first).
    #[arg(
        long,
        env = "HTTP_IDLE_TIMEOUT_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    http_idle_timeout_ms: u64,

    /// A connection whose peer takes none of the bytes written to it for this many
    /// milliseconds (it stopped reading) is closed.
    #[arg(
        long,
        env = "HTTP_SEND_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    http_send_timeout_ms: u64,

    /// HTTP/2 and gRPC connections are sent a PING this often, in milliseconds (0: never).
    #[arg(
        long,
        env = "HTTP2_KEEPALIVE_INTERVAL_MS",
        default_value_t = 30_000,
        value_name = "MS"
    )]
    http2_keepalive_interval_ms: u64,

    /// A PING not answered within this many milliseconds closes the connection.
    #[arg(
        long,
        env = "HTTP2_KEEPALIVE_TIMEOUT_MS",
        default_value_t = 20_000,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    http2_keepalive_timeout_ms: u64,

    /// TCP keepalive probes start after this many milliseconds of silence (0: off), so a
    /// peer that vanished is found out.
    #[arg(
        long,
        env = "TCP_KEEPALIVE_MS",
        default_value_t = 60_000,
        value_name = "MS"
    )]
    tcp_keepalive_ms: u64,

    /// Open connections, the HTTP and gRPC ports together. At the cap, idle connections are
    /// closed to make room (oldest first) and a new connection waits for a slot. Unset: the
    /// open files limit (raised to its hard limit at start) less a quarter, at least 32,
    /// kept for Redis, files and the runtime. It must be below the open files limit.
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "N"
    )]
    pub(crate) max_connections: Option<u64>,
}

impl From<&ConnectionArgs> for Limits {
    fn from(args: &ConnectionArgs) -> Self {
        let ms = Duration::from_millis;
        Limits {
            handshake: ms(args.http_handshake_timeout_ms),
            header: ms(args.http_header_timeout_ms),
            body: ms(args.http_body_timeout_ms),
            idle: ms(args.http_idle_timeout_ms),
            send: ms(args.http_send_timeout_ms),
            http2_keepalive_interval: Some(args.http2_keepalive_interval_ms)
                .filter(|ms| *ms > 0)
                .map(ms),
            http2_keepalive_timeout: ms(args.http2_keepalive_timeout_ms),
            tcp_keepalive: Some(args.tcp_keepalive_ms).filter(|ms| *ms > 0).map(ms),
        }
    }
}

/// How large one `ShouldRateLimit` call may be; a larger one fails with `INVALID_ARGUMENT`
/// naming the bound.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "gRPC calls")]
pub(crate) struct GrpcCallArgs {
    /// Descriptors in one call.
    #[arg(
        long,
        env = "GRPC_MAX_DESCRIPTORS",
        default_value_t = RequestLimits::DEFAULT_MAX_DESCRIPTORS,
        value_name = "N"
    )]
    grpc_max_descriptors: usize,

    /// Entries in one descriptor.
    #[arg(
        long,
        env = "GRPC_MAX_ENTRIES",
        default_value_t = RequestLimits::DEFAULT_MAX_ENTRIES,
        value_name = "N"
    )]
    grpc_max_entries: usize,

    /// Bytes of one descriptor entry's key and value together.
    #[arg(
        long,
        env = "GRPC_MAX_ENTRY_BYTES",
        default_value_t = RequestLimits::DEFAULT_MAX_ENTRY_BYTES,
        value_name = "BYTES"
    )]
    grpc_max_entry_bytes: usize,

    /// Bytes of one encoded call; a larger one is refused (`OUT_OF_RANGE`) before it is
    /// decoded.
    #[arg(
        long,
        env = "GRPC_MAX_MESSAGE_BYTES",
        default_value_t = RequestLimits::DEFAULT_MAX_MESSAGE_BYTES,
        value_name = "BYTES"
    )]
    grpc_max_message_bytes: usize,
}

impl From<&GrpcCallArgs> for RequestLimits {
    fn from(args: &GrpcCallArgs) -> Self {
        RequestLimits {
            max_descriptors: args.grpc_max_descriptors,
            max_entries: args.grpc_max_entries,
            max_entry_bytes: args.grpc_max_entry_bytes,
            max_message_bytes: args.grpc_max_message_bytes,
        }
    }
}
