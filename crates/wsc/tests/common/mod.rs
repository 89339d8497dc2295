//! Helpers for integration tests: real peers started as child processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The pinned Python packages the tests' peers use.
pub const PY_PACKAGES: &[&str] = &["websockets==17.4"];

/// The process's peak resident memory so far (`VmHWM`), in KiB; 0 where /proc is missing.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A loopback port nothing listens on (for a peer to take, or for a refused connection).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The virtualenv's python, made and filled on first use (as scripts/test does).
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = std::env::var_os("WSC_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/venv"));
        let py = venv.join("bin/python");
        if !py.exists() {
            let ok = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status()
                .expect("python3 is needed for the tests' peers");
            assert!(ok.success(), "could not create {venv:?}");
        }
        let missing = PY_PACKAGES.iter().any(|p| {
            let name = p.split("==").next().unwrap();
            !Command::new(&py)
                .args(["-m", "pip", "show", "-q", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if missing {
            let ok = Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PY_PACKAGES)
                .status()
                .unwrap();
            assert!(ok.success(), "pip install failed");
        }
        py
    })
    .clone()
}

/// A peer process that printed `READY <port>`; killed on drop.
pub struct Peer {
    child: Child,
    pub port: u16,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_ready(mut cmd: Command) -> Peer {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("peer failed to start");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("peer said {line:?}"))
        .parse()
        .unwrap();
    Peer { child, port }
}

/// The Python `websockets` test server (tests/peers/ws_server.py) with `args`.
pub fn python_server(args: &[&str]) -> Peer {
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("crates/wsc/tests/peers/ws_server.py"))
        .args(args);
    spawn_ready(cmd)
}

/// The Node `ws` package, installed (pinned) under target/node on first use.
pub fn node_modules() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace().join("target/node");
        if !dir.join("node_modules/ws/package.json").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let ok = Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg("ws@8.23.0")
                .status()
                .expect("npm is needed for the Node peer");
            assert!(ok.success(), "npm install ws failed");
        }
        dir.join("node_modules")
    })
    .clone()
}

/// The Node `ws` echo server (tests/peers/ws_node_server.js) with `args`.
pub fn node_server(args: &[&str]) -> Peer {
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", node_modules())
        .arg(workspace().join("crates/wsc/tests/peers/ws_node_server.js"))
        .args(args);
    spawn_ready(cmd)
}
