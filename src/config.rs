//! Command line and environment configuration (clap derive; every flag has a `HOOKRELAY_*` twin).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `hookrelay` — capture, inspect and relay webhooks.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "hookrelay",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; without a subcommand, `serve` with the flags given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the capture server (the default).
    Serve(ServeArgs),
    /// Relay a bin's captures to a local target (resumes where it left off).
    Listen(ListenArgs),
    /// Send a (signed) test webhook to a URL, retrying like a real sender.
    Send(crate::send::SendArgs),
}

/// Flags of `hookrelay listen`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["url", "server"])))]
pub struct ListenArgs {
    /// Inspector URL with the key in its fragment: `https://host/i/<id>#key=<key>`.
    #[arg(env = "HOOKRELAY_LISTEN_URL", conflicts_with_all = ["server", "bin", "key"])]
    pub url: Option<String>,
    /// Server base URL (instead of an inspector URL).
    #[arg(long, env = "HOOKRELAY_SERVER", requires_all = ["bin", "key"])]
    pub server: Option<String>,
    /// Bin id (with --server).
    #[arg(long, env = "HOOKRELAY_BIN", requires = "server")]
    pub bin: Option<String>,
    /// Bin key (with --server).
    #[arg(
        long,
        env = "HOOKRELAY_KEY",
        requires = "server",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Where to deliver: captures go to this URL + their path suffix + query.
    #[arg(long, env = "HOOKRELAY_TO")]
    pub to: String,
    /// Start after this seq instead of the saved position.
    #[arg(long, env = "HOOKRELAY_SINCE", conflicts_with = "all")]
    pub since: Option<u64>,
    /// Start from the oldest capture in the buffer.
    #[arg(long, env = "HOOKRELAY_ALL")]
    pub all: bool,
    /// Accept any TLS certificate from the server (dev only; explicit by design).
    #[arg(long, env = "HOOKRELAY_INSECURE", conflicts_with = "ca")]
    pub insecure: bool,
    /// Also trust the certificates in this PEM file (e.g. certs/cert.pem).
    #[arg(long, env = "HOOKRELAY_CA")]
    pub ca: Option<PathBuf>,
    /// Print each capture (method, path, headers, body) as it arrives.
    #[arg(long, env = "HOOKRELAY_PRINT")]
    pub print: bool,
    /// Where the relay position is saved [default: $XDG_STATE_HOME/hookrelay or ~/.local/state/hookrelay].
    #[arg(long, env = "HOOKRELAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Flags of `hookrelay serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Plain HTTP listener (HTTP/1.1 and h2c).
    #[arg(long, env = "HOOKRELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Optional HTTPS listener (rustls; ALPN h2 and http/1.1).
    #[arg(long, env = "HOOKRELAY_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM); generated self-signed when absent.
    #[arg(long, env = "HOOKRELAY_TLS_CERT", default_value = "certs/cert.pem")]
    pub tls_cert: PathBuf,
    /// TLS private key (PEM); generated when absent.
    #[arg(long, env = "HOOKRELAY_TLS_KEY", default_value = "certs/key.pem")]
    pub tls_key: PathBuf,
    /// Public base URL used in printed and returned URLs (e.g. https://hooks.example.com).
    #[arg(long, env = "HOOKRELAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Store backend: `memory` or `redis://host:port/db`.
    #[arg(long, env = "HOOKRELAY_STORE", default_value = "memory")]
    pub store: String,
    /// Id of the ready bin (`[a-z0-9][a-z0-9-]{2,63}`, not reserved); saved one or generated otherwise.
    #[arg(long, env = "HOOKRELAY_BIN_ID", requires = "bin_key", value_parser = parse_bin_id)]
    pub bin_id: Option<String>,
    /// Key of the ready bin (≥ 22 chars).
    #[arg(long, env = "HOOKRELAY_BIN_KEY", requires = "bin_id", hide_env_values = true, value_parser = parse_bin_key)]
    pub bin_key: Option<String>,
    /// Where the ready bin's id and key are kept [default: $XDG_STATE_HOME/hookrelay or ~/.local/state/hookrelay].
    #[arg(long, env = "HOOKRELAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Allowed replay/forward targets: host, CIDR or `loopback` (repeatable).
    #[arg(
        long = "forward-allow",
        env = "HOOKRELAY_FORWARD_ALLOW",
        value_delimiter = ','
    )]
    pub forward_allow: Vec<String>,
    /// Take the client address from the first X-Forwarded-For hop.
    #[arg(long, env = "HOOKRELAY_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// Largest request body kept (bigger: 413 and a truncated capture).
    #[arg(long, env = "HOOKRELAY_MAX_BODY", default_value = "10MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Ring buffer capacity of new bins (max 10000).
    #[arg(long, env = "HOOKRELAY_BIN_CAPACITY", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub bin_capacity: u32,
    /// Global memory budget for captures and bodies in flight.
    #[arg(long, env = "HOOKRELAY_MAX_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub max_memory: u64,
    /// Most bins at once.
    #[arg(long, env = "HOOKRELAY_MAX_BINS", default_value_t = 10000)]
    pub max_bins: usize,
    /// Most bytes of captures one bin holds (oldest evicted first).
    #[arg(long, env = "HOOKRELAY_MAX_BIN_BYTES", default_value = "32MiB", value_parser = parse_size)]
    pub max_bin_bytes: u64,
    /// Time allowed to send a request head (slowloris guard).
    #[arg(long, env = "HOOKRELAY_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Total time allowed to receive a request body.
    #[arg(long, env = "HOOKRELAY_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Requests per second per client IP (429 + Retry-After); off by default.
    #[arg(long, env = "HOOKRELAY_RATE_LIMIT_IP")]
    pub rate_limit_ip: Option<u32>,
    /// Requests per second per bin (429 + Retry-After); off by default.
    #[arg(long, env = "HOOKRELAY_RATE_LIMIT_BIN")]
    pub rate_limit_bin: Option<u32>,
    /// Bin creations per client IP per minute.
    #[arg(long, env = "HOOKRELAY_BIN_CREATE_LIMIT", default_value_t = 20)]
    pub bin_create_limit: u32,
    /// Most open connections (excess connections are closed at once).
    #[arg(long, env = "HOOKRELAY_MAX_CONNECTIONS", default_value_t = 10000)]
    pub max_connections: usize,
    /// Most live viewers (WebSockets) per bin.
    #[arg(long, env = "HOOKRELAY_MAX_VIEWERS", default_value_t = 32)]
    pub max_viewers: usize,
    /// Idle bins expire after this long.
    #[arg(long, env = "HOOKRELAY_BIN_TTL", default_value = "7d", value_parser = parse_duration)]
    pub bin_ttl: Duration,
    /// Seqs queued per forward target before `queue_full` is recorded (tests shrink it).
    #[arg(
        long,
        env = "HOOKRELAY_FORWARD_QUEUE",
        default_value_t = 1000,
        hide = true
    )]
    pub forward_queue: usize,
    /// First forward retry delay; later ones double (tests shrink it).
    #[arg(long, env = "HOOKRELAY_FORWARD_BACKOFF", default_value = "1s", value_parser = parse_duration, hide = true)]
    pub forward_backoff: Duration,
}

impl ServeArgs {
    /// Parse `serve` flags from an argv list (without the program name), for tests.
    pub fn from_args<I, S>(args: I) -> Result<ServeArgs, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("hookrelay"))
            .chain(args.into_iter().map(Into::into));
        Wrapper::try_parse_from(argv).map(|w| w.serve)
    }

    /// The state directory: flag, else `$XDG_STATE_HOME/hookrelay`, else `~/.local/state/hookrelay`.
    pub fn state_dir(&self) -> PathBuf {
        default_state_dir(self.state_dir.as_deref())
    }
}

/// Resolve the state directory from an optional override.
pub fn default_state_dir(flag: Option<&std::path::Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("hookrelay");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/hookrelay")
}

fn parse_bin_id(text: &str) -> Result<String, String> {
    crate::ids::validate_bin_id(text).map(|()| text.to_string())
}

fn parse_bin_key(text: &str) -> Result<String, String> {
    crate::ids::validate_bin_key(text).map(|()| text.to_string())
}

/// Parse a byte size: plain bytes or with a unit (`512KiB`, `10MiB`, `1GiB`, `10MB`, `1k`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 10MiB, 512KiB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parse a duration such as `10s`, `500ms`, `2m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration (e.g. 10s, 500ms, 2m): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_match_the_design() {
        let args = ServeArgs::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.max_body, 10 << 20);
        assert_eq!(args.bin_capacity, 500);
        assert_eq!(args.max_memory, 256 << 20);
        assert_eq!(args.max_bin_bytes, 32 << 20);
        assert_eq!(args.header_timeout, Duration::from_secs(10));
        assert_eq!(args.max_viewers, 32);
        assert!(ServeArgs::from_args(["--bin-capacity", "10001"]).is_err());
    }
}
