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

/// `wsc serve` on a free loopback port; killed on drop.
struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(extra: &[&str]) -> Serve {
    let mut child = wsc()
        .args(["serve", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("serve said {line:?}"))
        .to_owned();
    Serve(child, url)
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
        let accept = wsc::proto::handshake::accept_key(key);
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
