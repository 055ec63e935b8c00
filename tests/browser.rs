//! The inspector page in a real browser: starts the server in-process and runs
//! `tests/e2e/inspector.mjs` (Node + playwright-core driving Debian's headless Chromium).
//!
//! Needs `chromium` (or `CHROMIUM=/path`), `node` and `npm`. Without them the test is
//! skipped with a message, except under `CI=true`, where a missing tool fails it.
//! If `tests/e2e/node_modules` is missing, the test runs `npm ci --prefix tests/e2e`
//! itself (`.ci/run` may do that up front; then this is a no-op).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// The node run (it has its own 120 s watchdog; this is the backstop).
const E2E_TIMEOUT: Duration = Duration::from_secs(180);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skip (outside CI) or fail (in CI) because a tool is missing.
fn missing(what: &str) {
    if in_ci() {
        panic!("browser test: {what} (CI=true, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED browser test: {what}");
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
}

fn print_output(label: &str, out: &std::process::Output) {
    println!(
        "--- {label} stdout ---\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "--- {label} stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn ensure_node_modules(root: &Path, e2e: &Path) -> bool {
    if e2e.join("node_modules/playwright-core").is_dir() {
        return true;
    }
    if on_path("npm").is_none() {
        missing("npm not found and tests/e2e/node_modules is missing");
        return false;
    }
    println!("browser test: installing tests/e2e/node_modules with npm ci");
    let out = Command::new("npm")
        .args(["ci", "--prefix", "tests/e2e", "--no-audit", "--no-fund"])
        .current_dir(root)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run npm ci");
    print_output("npm ci", &out);
    assert!(out.status.success(), "npm ci --prefix tests/e2e failed");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_page_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");

    let Some(chromium) = find_chromium() else {
        missing("no Chromium (tried $CHROMIUM, /usr/bin/chromium, chromium-browser); apt-get install chromium");
        return;
    };
    if on_path("node").is_none() {
        missing("node not found on PATH");
        return;
    }
    if !ensure_node_modules(root, &e2e).await {
        return;
    }

    let srv = common::TestServer::start(&[]).await;
    let shot = root.join("target/inspector.png");
    println!(
        "browser test: {} against {} (bin {}), screenshot {}",
        chromium.display(),
        srv.base_url,
        srv.bin_id,
        shot.display()
    );

    let run = Command::new("node")
        .arg(e2e.join("inspector.mjs"))
        .arg(&srv.base_url)
        .arg(&srv.bin_id)
        .arg(&srv.bin_key)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(E2E_TIMEOUT, run).await {
        Ok(out) => out.expect("run node tests/e2e/inspector.mjs"),
        Err(_) => panic!("tests/e2e/inspector.mjs did not finish within {E2E_TIMEOUT:?}"),
    };
    print_output("inspector.mjs", &out);
    assert!(
        out.status.success(),
        "browser e2e failed ({}); see the [e2e] lines above",
        out.status
    );
    srv.stop().await;
}
