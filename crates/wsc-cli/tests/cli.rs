//! The `wsc` binary driven as a user would: pipes, a pseudo-terminal, bad input.

#[path = "../../wsc/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

fn wsc() -> Command {
    Command::cargo_bin("wsc").unwrap()
}

fn run_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap()
}

/// `wsc serve` on a free loopback port; killed on drop. Its stderr after the first line is
/// collected in `.2`.
struct Serve(Child, String, std::sync::Arc<std::sync::Mutex<String>>);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    fn stderr(&self) -> String {
        self.2.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

fn serve(extra: &[&str]) -> Serve {
    let mut cmd = wsc();
    cmd.args(["serve", "127.0.0.1:0"]).args(extra);
    serve_with(cmd)
}

/// Runs `cmd` (a `wsc serve`, perhaps under a wrapper) and waits for its listening line.
fn serve_with(mut cmd: Command) -> Serve {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://") || w.starts_with("wss://"))
        .unwrap_or_else(|| panic!("serve said {line:?}"))
        .to_owned();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    Serve(child, url, log)
}

#[test]
fn pipe_mode_against_python_websockets() {
    let peer = common::python_server(&[]);
    let out = run_with_stdin(&[&peer.url("/")], "a\nb\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pipe_mode_against_wsc_serve_and_json() {
    let s = serve(&[]);
    let out = run_with_stdin(&[&s.1, "--json"], "{\"k\":[1,2]}\nplain\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\n  \"k\": [\n    1,\n    2\n  ]\n}\nplain\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn no_url_talks_to_the_built_in_server() {
    let out = run_with_stdin(&[], "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn raw_mode_shows_control_frames_and_verbose_shows_the_handshake() {
    let peer = common::python_server(&[]);
    let out = run_with_stdin(
        &[&peer.url("/"), "--raw", "-v", "-H", "X-Test: 1"],
        "close:4005:bye\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("close [fin] 4005"), "{stdout}");
    assert!(
        stderr.contains("> x-test: 1") && stderr.contains("< HTTP/1.1 101"),
        "{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(8),
        "a 4005 close is not a clean exit: {stderr}"
    );
}

#[test]
fn broadcast_server_sends_to_everyone() {
    let s = serve(&["--broadcast"]);
    // A listener that sends nothing and waits a moment for broadcasts.
    let mut listener = wsc()
        .args([&s.1, "--wait", "2s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = run_with_stdin(&[&s.1], "to all\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to all\n");
    std::thread::sleep(Duration::from_millis(300));
    drop(listener.stdin.take());
    let got = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "to all\n");
}

#[test]
fn documented_exit_codes_for_bad_input() {
    let peer = common::python_server(&[]);
    // A port nobody listens on: the whole chain says where and why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused_url = format!("ws://{closed}/");
    let refused_text = format!("wsc: connecting to {closed}: Connection refused (os error 111)");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["ws://no-such-host.invalid/"],
            3,
            "wsc: resolving no-such-host.invalid: ",
        ),
        (&[&refused_url], 3, &refused_text),
        (&[&peer.url("/refuse")], 4, "403"),
        (&["http://example.com/"], 2, "invalid URL"),
        (&["ws://exa mple.com/"], 2, "invalid URL"),
        (&["-H", "no colon", &peer.url("/")], 2, "bad header"),
        (
            &["--connect-timeout", "soon", &peer.url("/")],
            2,
            "duration",
        ),
    ];
    for (args, code, text) in cases {
        let out = run_with_stdin(args, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(text), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_connection_dropped_without_a_close_frame_exits_7_in_one_wording() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    // Answers the handshake, takes the first message, and drops the connection.
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0);
            head.extend_from_slice(&b[..n]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim();
        let accept = wsc_proto::handshake::accept_key(key);
        write!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .unwrap();
        let _ = s.read(&mut b).unwrap();
    });
    let out = run_with_stdin(&[&url], "a\n");
    server.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_eq!(
        stderr
            .matches("connection closed without a Close frame")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn timeout_exit_code() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let out = run_with_stdin(&["--connect-timeout", "300ms", &url], "");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(l);
}

#[test]
fn bench_prints_a_summary() {
    let s = serve(&[]);
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(["bench", &s.1, "-c", "2", "-s", "100", "-d", "1s"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("round trips") && stdout.contains("p99"),
        "{stdout}"
    );
    let n: u64 = stdout
        .split("round trips ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 100, "{stdout}");
}

#[test]
fn interactive_mode_in_a_pty() {
    use expectrl::{Eof, Regex, Session};
    let s = serve(&[]);
    let mut cmd = wsc();
    cmd.arg(&s.1);
    cmd.env("TERM", "xterm");
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    p.expect("connected").unwrap();
    // Typed as a person types: one key at a time.
    let type_line = |p: &mut Session, line: &str| {
        for c in line.chars().chain(std::iter::once('\r')) {
            p.send(c.to_string()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    type_line(&mut p, "hello there");
    p.expect(Regex(r"\d\d:\d\d:\d\d\.\d{3} < text: hello there"))
        .unwrap();
    type_line(&mut p, "/binary cafe");
    p.expect("< binary: cafe").unwrap();
    type_line(&mut p, "/close 1000 done");
    p.expect(Eof).unwrap();
}

/// Runs `wsc args…` with stdin held open for `hold`, then closed; returns the output and how
/// long the run took.
fn run_holding_stdin(args: &[&str], hold: Duration) -> (std::process::Output, std::time::Duration) {
    use std::io::Write;
    let start = std::time::Instant::now();
    let mut child = wsc()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"");
    std::thread::sleep(hold);
    drop(stdin);
    let out = wait_bounded(child, Duration::from_secs(30));
    (out, start.elapsed())
}

/// Waits for `child`, killing it (and failing) after `limit`.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("wsc did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_1_when_stdin_cannot_be_read() {
    let peer = common::python_server(&[]);
    let start = std::time::Instant::now();
    let out = wsc()
        .arg(peer.url("/"))
        .stdin(std::fs::File::open("/").unwrap())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reading stdin"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn exit_2_for_raw_with_compress() {
    let peer = common::python_server(&[]);
    let out = run_with_stdin(&["--raw", "--compress", &peer.url("/")], "x\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--compress"), "{stderr}");
}

#[test]
fn exit_5_when_pings_go_unanswered() {
    // The ping timeout ends the session while stdin is still open: wsc does not wait for it.
    let peer = common::python_server(&[]);
    let url = peer.url("/stall");
    let start = std::time::Instant::now();
    let child = wsc()
        .args(["--ping-interval", "200ms", "--ping-timeout", "300ms", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The close handshake with a peer that reads nothing ends at the 5 s close timeout.
    let out = wait_bounded(child, Duration::from_secs(15));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("ping timed out"), "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn exit_6_names_the_flag_the_user_set() {
    let peer = common::python_server(&[]);
    let start = std::time::Instant::now();
    for raw in [false, true] {
        let mut args = vec!["--max-message-size", "10"];
        if raw {
            args.push("--raw");
        }
        let url = peer.url("/big?n=100");
        args.push(&url);
        let (out, _) = run_holding_stdin(&args, Duration::from_millis(1500));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{stderr}");
        assert!(
            stderr.contains("--max-message-size (10)") && !stderr.contains("max_frame_size"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn exit_7_when_the_server_dies_without_a_close() {
    let peer = common::python_server(&[]);
    let url = peer.url("/");
    let start = std::time::Instant::now();
    let child = wsc()
        .args(["--no-ping", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    drop(peer); // killed: the kernel closes its sockets, no Close frame is sent
    let out = wait_bounded(child, Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("without a Close"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[test]
fn compress_offers_and_uses_permessage_deflate() {
    let peer = common::python_server(&["--deflate"]);
    let out = run_with_stdin(&["--compress", "-v", &peer.url("/")], "squeeze me\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("> sec-websocket-extensions: permessage-deflate"),
        "{stderr}"
    );
    assert!(
        stderr.contains("< sec-websocket-extensions: permessage-deflate"),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout), "squeeze me\n");
}

#[test]
fn serve_compress_answers_permessage_deflate() {
    for (flags, answered) in [(&["--compress"][..], true), (&[][..], false)] {
        let s = serve(flags);
        let out = run_with_stdin(&["--compress", "-v", &s.1], "squeeze me\n");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(
            stderr.contains("< sec-websocket-extensions: permessage-deflate"),
            answered,
            "{flags:?}: {stderr}"
        );
        assert_eq!(text(&out.stdout), "squeeze me\n");
    }
}

#[test]
fn verbose_shows_keepalive_pings_pongs_and_the_close_sent() {
    let peer = common::python_server(&[]);
    let (out, _) = run_holding_stdin(
        &["-v", "--ping-interval", "200ms", &peer.url("/")],
        Duration::from_millis(1000),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Payloads in hex: "wsc keepalive 1" and its echo.
    let first = "[fin] 777363206b656570616c6976652031";
    assert!(stderr.contains(&format!("> ping {first}")), "{stderr}");
    assert!(stderr.contains(&format!("< pong {first}")), "{stderr}");
    assert!(stderr.contains("> close [fin] 1000"), "{stderr}");
    assert!(stderr.contains("< close [fin] 1000"), "{stderr}");
}

#[test]
fn no_ping_sends_no_pings() {
    let peer = common::python_server(&[]);
    let (out, _) = run_holding_stdin(
        &["-v", "--no-ping", &peer.url("/")],
        Duration::from_millis(800),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("ping"), "{stderr}");
}

#[test]
fn raw_shows_the_frames_wsc_sends_on_stderr() {
    let peer = common::python_server(&[]);
    let out = run_with_stdin(&["--raw", "--binary", &peer.url("/")], "hi\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        "binary [fin] 6869\nclose [fin] 1000(NORMAL)\n"
    );
    assert!(stderr.contains("> close [fin] 1000"), "{stderr}");
}

#[test]
fn request_flags_reach_the_server() {
    let peer = common::python_server(&[]);
    let out = run_with_stdin(
        &[
            "-v",
            "--origin",
            "https://me.example",
            "-u",
            "ann:pw",
            "--protocol",
            "nope",
            "--protocol",
            "chat",
            &peer.url("/whoami"),
        ],
        "",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "cookie=;origin=https://me.example\n");
    assert!(
        stderr.contains("> authorization: Basic YW5uOnB3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("> sec-websocket-protocol: nope, chat"),
        "{stderr}"
    );
    assert!(
        stderr.contains("< sec-websocket-protocol: chat"),
        "{stderr}"
    );
    let out = run_with_stdin(&["-v", "--oauth2-bearer", "t0k", &peer.url("/")], "");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("> authorization: Bearer t0k"), "{stderr}");
}

#[test]
fn proxy_flags_tunnel_through_socks() {
    let port = common::free_port();
    let mut socks = match Command::new("microsocks")
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("microsocks is needed for this test: {e}"),
    };
    std::thread::sleep(Duration::from_millis(300));
    let peer = common::python_server(&[]);
    let proxy = format!("socks5://127.0.0.1:{port}");
    let out = run_with_stdin(&["-x", &proxy, &peer.url("/")], "via socks\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via socks\n");
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(["--proxy-env", &peer.url("/")])
        .env("ALL_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .write_stdin("via env\n")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via env\n");
    // The proxy is really in the path: with it gone, both fail to connect.
    let _ = socks.kill();
    let _ = socks.wait();
    let out = run_with_stdin(&["-x", &proxy, &peer.url("/")], "x\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn interactive_ping_shows_the_pong_and_own_close_is_clean() {
    use expectrl::{Eof, Regex, Session, WaitStatus};
    let s = serve(&[]);
    let mut cmd = wsc();
    cmd.args(["-v", "--no-ping", &s.1]);
    cmd.env("TERM", "xterm");
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    p.expect("connected").unwrap();
    let type_line = |p: &mut Session, line: &str| {
        for c in line.chars().chain(std::iter::once('\r')) {
            p.send(c.to_string()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    type_line(&mut p, "/ping are you there");
    p.expect(Regex(r"\d\d:\d\d:\d\d\.\d{3} < pong: are you there"))
        .unwrap();
    type_line(&mut p, "/close 4000 bye");
    p.expect(Regex(r"> close \[fin\] 4000")).unwrap();
    let rest = p.expect(Eof).unwrap();
    let rest = String::from_utf8_lossy(rest.as_bytes()).into_owned();
    assert!(!rest.contains("server closed"), "{rest}");
    let proc = p.get_process();
    assert_eq!(proc.wait().unwrap(), WaitStatus::Exited(proc.pid(), 0));
}

/// A runtime for tests that drive `wsc serve` with the library's client.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP client that completes the upgrade and then never reads again.
fn silent_subscriber(url: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    c
}

#[test]
fn broadcast_does_not_wait_for_a_subscriber_that_never_reads() {
    let s = serve(&["--broadcast", "-v"]);
    let _silent = silent_subscriber(&s.1);
    const N: usize = 1200;
    const SIZE: usize = 64 << 10;
    let start = std::time::Instant::now();
    let got = rt().block_on(async {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let client = wsc::Client::new();
        let mut listener = client.connect(s.1.as_str()).await.unwrap();
        let (tx, mut rx) = client.connect(s.1.as_str()).await.unwrap().split();
        let (b_got, c_got) = (
            std::sync::Arc::new(AtomicUsize::new(0)),
            std::sync::Arc::new(AtomicUsize::new(0)),
        );
        // The sender reads what comes back to it too, and never runs more than WINDOW
        // messages ahead of the readers: they keep up, only the silent one falls behind.
        const WINDOW: usize = 48;
        let b = b_got.clone();
        let drain = tokio::spawn(async move {
            while let Some(Ok(_)) = rx.recv().await {
                b.fetch_add(1, Relaxed);
            }
        });
        let c = c_got.clone();
        let send = tokio::spawn(async move {
            for i in 0..N {
                while i >= b_got.load(Relaxed).min(c.load(Relaxed)) + WINDOW {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tx.send(wsc::Message::binary(vec![i as u8; SIZE]))
                    .await
                    .unwrap();
            }
            tx
        });
        let mut got = 0;
        while got < N {
            match tokio::time::timeout(Duration::from_secs(20), listener.recv()).await {
                Ok(Some(Ok(m))) => {
                    assert_eq!(m.as_bytes()[0], got as u8);
                    got += 1;
                    c_got.store(got, Relaxed);
                }
                _ => break,
            }
        }
        let tx = send.await.unwrap();
        let _ = tx.close(wsc::CloseReason::normal()).await;
        drain.abort();
        got
    });
    assert_eq!(got, N, "the broadcast stalled; server said: {}", s.stderr());
    // What waits for the silent subscriber is bounded (8 MiB), not the whole broadcast.
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("server peak RSS {peak_kib} KiB");
    assert!(peak_kib < 64 << 10, "server peak RSS {peak_kib} KiB");
    assert!(
        start.elapsed() < Duration::from_secs(40),
        "{:?}",
        start.elapsed()
    );
    assert!(
        s.stderr().contains("behind; disconnecting"),
        "{}",
        s.stderr()
    );
}

#[test]
fn max_connections_holds_further_clients_until_one_leaves() {
    let s = serve(&["--max-connections", "2"]);
    rt().block_on(async {
        let client = wsc::Client::builder()
            .handshake_timeout(Duration::from_millis(800))
            .build()
            .unwrap();
        let a = client.connect(s.1.as_str()).await.unwrap();
        let _b = client.connect(s.1.as_str()).await.unwrap();
        let third = client.connect(s.1.as_str()).await;
        assert!(
            matches!(third, Err(wsc::Error::Timeout(_))),
            "a third session was served: {:?}",
            third.map(|_| ())
        );
        a.close(wsc::CloseReason::normal()).await.unwrap();
        let start = std::time::Instant::now();
        let mut c = client.connect(s.1.as_str()).await.unwrap();
        c.send("in").await.unwrap();
        assert_eq!(c.recv().await.unwrap().unwrap(), wsc::Message::text("in"));
        assert!(start.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn idle_sessions_are_closed_with_1001() {
    let s = serve(&["--idle-timeout", "500ms"]);
    rt().block_on(async {
        let client = wsc::Client::builder().ping_interval(None).build().unwrap();
        let mut busy = client.connect(s.1.as_str()).await.unwrap();
        let mut idle = client.connect(s.1.as_str()).await.unwrap();
        let start = std::time::Instant::now();
        // One client keeps talking for longer than the timeout and is not closed.
        for _ in 0..8 {
            busy.send("still here").await.unwrap();
            assert!(busy.recv().await.unwrap().is_ok());
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert!(idle.recv().await.is_none());
        assert_eq!(idle.close_reason().await.code().as_u16(), 1001);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(busy.is_open());
    });
}

/// The CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn accept_backs_off_at_the_descriptor_limit() {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=40:40")
        .arg(assert_cmd::cargo::cargo_bin("wsc"))
        .args(["serve", "127.0.0.1:0", "-v"]);
    let s = serve_with(cmd);
    let addr =
        s.1.trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
    // Silent clients until the server has no descriptor left (more than 40), and more
    // waiting in the backlog so that accept keeps failing.
    let clients: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(s.pid()) - before;
    eprintln!("server CPU at the descriptor limit: {used} ticks in 2 s");
    // 2 s at 100 ticks a second: spinning on accept4 costs close to 200.
    assert!(
        used < 20,
        "{used} ticks of CPU in 2 s at the descriptor limit"
    );
    assert!(
        s.stderr().contains("retrying in"),
        "never at the limit: {}",
        s.stderr()
    );
    drop(clients);
    // Once the silent clients are gone the server serves again.
    let start = std::time::Instant::now();
    let peer = s.1.clone();
    let out = run_with_stdin(&[&peer], "back\n");
    assert_eq!(text(&out.stdout), "back\n", "{}", text(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files in a fresh
/// directory: (ca, cert, key); a client certificate from the same CA is beside them
/// (client.pem, client-key.pem).
fn certificates() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wsc-cli-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "wsc test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let pem = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap()
            .pem();
        std::fs::write(dir.join(format!("{file}.pem")), pem).unwrap();
        std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
    };
    leaf(
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        "server",
    );
    leaf(vec!["wsc client".to_owned()], "client");
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    )
}

#[test]
fn serve_wss_with_cert_and_key() {
    let (ca, cert, key) = certificates();
    let s = serve(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(s.1.starts_with("wss://127.0.0.1:"), "{}", s.1);
    let start = std::time::Instant::now();
    let out = run_with_stdin(&["--cacert", ca.to_str().unwrap(), &s.1], "secret\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "secret\n");
    let out = run_with_stdin(&["-k", &s.1], "anyway\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "anyway\n");
    // Without a way to trust it, the certificate is refused: could not connect.
    let out = run_with_stdin(&[&s.1], "x\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("TLS"), "{}", text(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(20));
    // A key that is not one is refused at start.
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(["serve", "127.0.0.1:0", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&ca)
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(ca.parent().unwrap());
}

#[test]
fn serve_selects_a_protocol_and_prints_one_line_per_session() {
    let s = serve(&["--protocol", "chat", "--protocol", "superchat", "-v"]);
    let out = run_with_stdin(
        &["-v", "--protocol", "superchat", &format!("{}room", s.1)],
        "abc\ndef\n",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("< sec-websocket-protocol: superchat"),
        "{stderr}"
    );
    let out = run_with_stdin(&["-v", "--protocol", "other", &s.1], "");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("< sec-websocket-protocol"), "{stderr}");
    // Both sessions are over once the clients exit; their lines follow at once.
    let start = std::time::Instant::now();
    while s.stderr().lines().count() < 2 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = s.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "one line per session: {log}");
    assert!(
        lines[0].contains("/room (superchat): 2 messages, 6 bytes in; closed 1000"),
        "{log}"
    );
    assert!(
        lines[1].contains(": 0 messages, 0 bytes in; closed 1000"),
        "{log}"
    );
}

#[test]
fn wait_stops_early_once_replies_are_in_and_ends_with_5_when_close_goes_unanswered() {
    let peer = common::python_server(&[]);
    let start = std::time::Instant::now();
    let out = run_with_stdin(&["--wait", "20s", &peer.url("/")], "a\nb\nc\n");
    assert_eq!(text(&out.stdout), "a\nb\nc\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // A server that reads nothing: no reply within --wait, then no answer to the Close
    // within the 5 s close timeout.
    let start = std::time::Instant::now();
    let out = run_with_stdin(
        &["--no-ping", "--wait", "500ms", &peer.url("/stall")],
        "x\n",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("close timed out"), "{stderr}");
    let took = start.elapsed();
    assert!(
        took > Duration::from_millis(500) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn interactive_says_when_the_server_closed() {
    use expectrl::{Eof, Regex, Session, WaitStatus};
    let peer = common::python_server(&[]);
    let mut cmd = wsc();
    cmd.args(["--no-ping", &peer.url("/")]);
    cmd.env("TERM", "xterm");
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    p.expect("connected").unwrap();
    for c in "close:4005:bye\r".chars() {
        p.send(c.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    p.expect(Regex(r"session closed \(4005 .bye.\); press Enter"))
        .unwrap();
    p.send("\r").unwrap();
    let rest = p.expect(Eof).unwrap();
    let rest = String::from_utf8_lossy(rest.as_bytes()).into_owned();
    assert!(rest.contains("server closed with 4005"), "{rest}");
    let proc = p.get_process();
    assert_eq!(proc.wait().unwrap(), WaitStatus::Exited(proc.pid(), 8));
}

#[test]
fn exit_7_when_the_server_aborts_the_connection() {
    // A server that resets the connection (TCP RST) on the first message.
    const ABORTER: &str = r#"
import asyncio, socket, struct
from websockets.asyncio.server import serve

async def handler(ws):
    await ws.recv()
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()

async def main():
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

asyncio.run(main())
"#;
    let mut cmd = Command::new(common::python());
    cmd.args(["-c", ABORTER]);
    let peer = common::spawn_ready(cmd);
    let start = std::time::Instant::now();
    let out = run_with_stdin(&[&peer.url("/")], "boom\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("without a Close"), "{stderr}");
    assert!(stderr.contains("reset"), "the cause is kept: {stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn client_certificate_flags_for_mutual_tls() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (ca, cert, key) = certificates();
    let dir = ca.parent().unwrap().to_owned();
    // A wss echo server that requires a client certificate from the test CA.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).unwrap())
        .unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(&cert).unwrap()],
            PrivateKeyDer::from_pem_file(&key).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let runtime = rt();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut s) = wsc::server::accept(tls, &Default::default()).await else {
                    return;
                };
                while let Some(Ok(m)) = s.recv().await {
                    let _ = s.send(m).await;
                }
            });
        }
    });
    let client = |file: &str| dir.join(file).to_str().unwrap().to_owned();
    let (client_cert, client_key) = (client("client.pem"), client("client-key.pem"));
    let ca = ca.to_str().unwrap();
    let start = std::time::Instant::now();
    let out = run_with_stdin(
        &[
            "--cacert",
            ca,
            "--cert",
            &client_cert,
            "--key",
            &client_key,
            &url,
        ],
        "it is me\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "it is me\n");
    // Without the certificate the server refuses the session.
    let out = run_with_stdin(&["--cacert", ca, &url], "x\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(start.elapsed() < Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_rate_and_binary() {
    let peer = common::python_server(&[]);
    let start = std::time::Instant::now();
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(["bench", &peer.url("/"), "-c", "2", "-s", "64", "-r", "40"])
        .args(["-d", "2s", "--binary"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let n: u64 = stdout
        .split("round trips ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    // 40 a second for 2 s: about 80, never the thousands an unpaced run makes.
    assert!((40..=120).contains(&n), "{stdout}");
    assert!(start.elapsed() < Duration::from_secs(15));
}
