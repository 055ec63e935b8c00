//! A private `redis-server` per test: free port, temp dir, stopped on drop.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running (or stopped, for outage tests) redis-server.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    dir: tempfile::TempDir,
    persistent: bool,
    child: Option<Child>,
}

/// Whether redis-server can run here. Without it: a printed skip reason (false), or a
/// panic under `CI=true`, where it must be installed.
pub fn available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("redis-server is not installed (CI installs it: apt-get install redis-server)");
        }
        eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

impl RedisServer {
    /// Start an in-memory redis-server; `None` (skip) when it isn't installed.
    pub async fn start() -> Option<RedisServer> {
        Self::start_with(false).await
    }

    /// Start one that fsyncs every write to an append-only file, so a killed and restarted
    /// server keeps everything it acknowledged.
    pub async fn start_persistent() -> Option<RedisServer> {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let port = StdListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
            dir: tempfile::tempdir().expect("temp dir"),
            persistent,
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// (Re)start on the same port and directory; waits until it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(self.dir.path());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping().await {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill it hard (SIGKILL) and wait for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
