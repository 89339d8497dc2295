//! What an idle compressed session holds: many sessions against the Python `websockets`
//! server, one message each way, then quiet; the process's resident memory per session, with
//! the server's defaults (12-bit windows) and with no context takeover both ways (where no
//! deflate state needs to outlive a message).
//!
//! Each measurement runs in a child process of its own (see `measured`), one at a time.

mod common;

use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use wsc::{Client, CloseReason, DeflateConfig};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const SESSIONS: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn json_like(n: usize) -> String {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            r#"{{"id":{i},"user":"user{}","score":{}}},"#,
            i % 97,
            (i * 7919) % 1000
        ));
        i += 1;
    }
    s.truncate(n);
    s
}

/// Resident KiB per idle session after one 2 KiB message each way.
async fn per_idle_session(url: &str, config: DeflateConfig, expect: &str) -> u64 {
    let client = Client::builder().deflate(config).build().unwrap();
    let text = json_like(2048);
    // One session first: what any session needs once is in the baseline.
    let mut first = client.connect(url).await.unwrap();
    first.send(text.as_str()).await.unwrap();
    first.recv().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let mut s = client.connect(url).await.unwrap();
        let ext = &s.call().extensions()[0];
        assert!(ext.contains(expect), "{ext}");
        s.send(text.as_str()).await.unwrap();
        assert_eq!(s.recv().await.unwrap().unwrap().as_text().unwrap(), text);
        sessions.push(s);
    }
    // Quiet long enough for the drivers to give their buffers back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let per = rss_kib().saturating_sub(before) / SESSIONS as u64;
    for s in &sessions {
        assert!(s.sender().is_open());
    }
    for s in sessions {
        s.sender().close(CloseReason::normal()).await.unwrap();
    }
    first.sender().close(CloseReason::normal()).await.unwrap();
    per
}

/// Marks the child process that measures (see `measure_child`).
const CHILD: &str = "WSC_DEFLATE_MEMORY_CHILD";

/// Not a test of its own: runs one measurement (the python server's arguments in [`CHILD`])
/// in a child process and prints it; without [`CHILD`] set it does nothing. `WSC_MEM_LEVEL`
/// sets the deflater's memLevel, for measuring.
#[test]
fn measure_child() {
    let Some(args) = std::env::var_os(CHILD) else {
        return;
    };
    let args = args.into_string().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let args: Vec<&str> = args.split(' ').collect();
        let expect = if args.len() > 1 {
            "client_no_context_takeover"
        } else {
            "server_max_window_bits=12"
        };
        let peer = common::python_server(&args);
        let mut config = DeflateConfig::default();
        if let Some(level) = std::env::var("WSC_MEM_LEVEL")
            .ok()
            .and_then(|l| l.parse().ok())
        {
            config = config.mem_level(level);
        }
        let per = per_idle_session(&peer.url("/"), config, expect).await;
        println!("measured {per} KiB per idle session");
    });
}

/// KiB per idle session, measured in a child process whose allocator hands memory of 64 KiB
/// and more back to the system as soon as it is freed: what a session holds, not what glibc
/// keeps after a session gave it back (glibc's own heuristics would keep freed deflate states
/// resident and make the figure depend on the order of allocations).
fn measured(server_args: &str) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "measure_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, server_args)
        .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    text.split("measured ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {text}"))
}

#[tokio::test]
async fn an_idle_session_with_the_python_servers_deflate_defaults() {
    let _g = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let per = measured("--deflate-defaults");
    println!("deflate, python defaults: {per} KiB per idle session");
    // Context takeover both ways: both states stay (zlib-rs: a 128 KiB hash table and the
    // window to deflate, memLevel's buffers; a 32 KiB window to inflate).
    assert!(per < 220, "{per} KiB per idle session");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn an_idle_session_without_context_takeover_holds_no_deflate_state() {
    let _g = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let per = measured("--deflate --no-context-takeover");
    println!("deflate, no context takeover: {per} KiB per idle session");
    assert!(per < 32, "{per} KiB per idle session");
    assert!(started.elapsed() < Duration::from_secs(60));
}
