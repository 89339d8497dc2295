//! The scripting flags through the binary, against real peers: the Python `websockets` echo
//! server, and `wsc serve --exec` where a peer must say more than an echo.

#[path = "../../wsc/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn run(args: &[&str], stdin: &str) -> std::process::Output {
    assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `wsc serve --exec COMMAND` on a free port; killed on drop.
struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_exec(command: &str) -> Serve {
    let mut child = Command::cargo_bin("wsc")
        .unwrap()
        .args(["serve", "127.0.0.1:0", "--exec", command])
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
fn one_message_sends_all_of_stdin_and_prints_one_reply() {
    let peer = common::python_server(&[]);
    let t = Instant::now();
    let out = run(&["-1", &peer.url("/")], "a\nb\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // One message "a\nb" (the final newline dropped), echoed once.
    assert_eq!(stdout(&out), "a\nb\n");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn one_message_without_a_reply_exits_5() {
    let server = serve_exec("exec sleep 30");
    let t = Instant::now();
    let out = run(&["-1", "--wait", "500ms", &server.1], "anyone?");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no reply"),
        "{out:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn count_exits_after_n_messages() {
    // A peer that answers one line with five, then says nothing for a long time.
    let server = serve_exec(r#"read l; for i in 1 2 3 4 5; do echo "$l $i"; done; exec sleep 30"#);
    let t = Instant::now();
    let out = run(&["--count", "3", &server.1], "x\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "x 1\nx 2\nx 3\n");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    let peer = common::python_server(&[]);
    let out = run(&["--count", "2", &peer.url("/")], "a\nb\nc\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "a\nb\n");
}

#[test]
fn exit_on_eof_does_not_wait_for_replies() {
    let server = serve_exec("read l; sleep 1; echo late");
    let t = Instant::now();
    let out = run(&["--exit-on-eof", &server.1], "x\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn no_close_waits_until_the_server_closes() {
    // The reply comes after the default 5 s wait; the program's exit then closes with 1000.
    let server = serve_exec("read l; sleep 6; echo late");
    let t = Instant::now();
    let out = run(&["--no-close", &server.1], "x\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "late\n");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // Without it, the default wait gives up first.
    let out = run(&[&server.1], "x\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn timestamps_are_rfc3339_with_milliseconds() {
    let peer = common::python_server(&[]);
    let out = run(&["--timestamps", &peer.url("/")], "hello\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let line = stdout(&out);
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "hello\n");
    // 2026-01-31T12:00:00.123Z
    let b = stamp.as_bytes();
    assert_eq!(b.len(), 24, "{stamp}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{stamp}"),
            10 => assert_eq!(*c, b'T', "{stamp}"),
            13 | 16 => assert_eq!(*c, b':', "{stamp}"),
            19 => assert_eq!(*c, b'.', "{stamp}"),
            23 => assert_eq!(*c, b'Z', "{stamp}"),
            _ => assert!(c.is_ascii_digit(), "{stamp}"),
        }
    }
    let year: u32 = stamp[..4].parse().unwrap();
    assert!(year >= 2024, "{stamp}");
}

#[test]
fn base64_in_and_out() {
    let peer = common::python_server(&[]);
    // Bytes that are not UTF-8 go out as binary and come back printed as base64.
    let out = run(&["--base64", &peer.url("/")], "3q2+7w==\n/w==\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "3q2+7w==\n/w==\n");
    let out = run(&["--base64", &peer.url("/")], "not base64!\n");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn reconnect_carries_on_after_the_server_restarts() {
    let port = common::free_port();
    let start = || {
        let mut cmd = Command::new(common::python());
        cmd.arg(common::workspace().join("crates/wsc/tests/peers/ws_server.py"))
            .args(["--port", &port.to_string()]);
        common::spawn_ready(cmd)
    };
    let first = start();
    let mut wsc = Command::cargo_bin("wsc")
        .unwrap()
        .args([
            "--reconnect",
            "--reconnect-max-delay",
            "200ms",
            "--count",
            "2",
            &first.url("/"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = wsc.stdin.take().unwrap();
    let mut lines = BufReader::new(wsc.stdout.take().unwrap());
    let t = Instant::now();
    stdin.write_all(b"before\n").unwrap();
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");
    drop(first);
    // Sent while the server is down: queued, and sent once connected again.
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"after\n").unwrap();
    let _second = start();
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n");
    let status = loop {
        if let Some(s) = wsc.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "wsc did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn compress_is_offered_by_exec_and_forward() {
    let peer = common::python_server(&["--deflate"]);
    // --exec: the handshake (-v) shows the extension negotiated.
    let out = run(
        &[
            "--compress",
            "-v",
            "--exec",
            r#"echo hi; read x; echo "back: $x" >&2"#,
            &peer.url("/"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("< sec-websocket-extensions: permessage-deflate"),
        "{err}"
    );
    assert!(err.contains("back: hi"), "{err}");

    // forward: its line per connection names the extension.
    let mut fwd = Command::cargo_bin("wsc")
        .unwrap()
        .args([
            "forward",
            "tcp-listen:127.0.0.1:0",
            &peer.url("/"),
            "--compress",
            "-v",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(fwd.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tcp://"))
        .unwrap()
        .to_owned();
    {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&[b'z'; 10_000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![b'z'; 10_000]);
    }
    line.clear();
    err.read_line(&mut line).unwrap();
    let _ = fwd.kill();
    let _ = fwd.wait();
    assert!(line.contains("permessage-deflate"), "{line}");
}

#[test]
fn one_message_reads_a_terminal_to_its_end() {
    use expectrl::{Eof, Session, WaitStatus};
    // A peer that answers one message of two lines with one line naming both.
    let server = serve_exec(r#"read a; read b; echo "got $a+$b"; exec sleep 30"#);
    let mut cmd = Command::cargo_bin("wsc").unwrap();
    cmd.args(["-1", &server.1]);
    cmd.env("TERM", "xterm");
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    // Two lines typed, then Ctrl-D: one message, not the interactive prompt.
    p.send("first\rsecond\r").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.send("\x04").unwrap();
    let out = p.expect(Eof).unwrap();
    let out = String::from_utf8_lossy(out.as_bytes()).replace('\r', "");
    // One message of both lines, answered, printed as a pipe prints it.
    assert!(out.ends_with("got first+second\n"), "{out:?}");
    assert!(!out.contains("connected;"), "{out:?}");
    let proc = p.get_process();
    assert_eq!(proc.wait().unwrap(), WaitStatus::Exited(proc.pid(), 0));
}

#[test]
fn help_shows_every_new_flag_with_an_example() {
    let help = |args: &[&str]| {
        let out = run(args, "");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        stdout(&out)
    };
    let main = help(&["--help"]);
    for flag in [
        "--one-message",
        "--count",
        "--exit-on-eof",
        "--no-close",
        "--timestamps",
        "--base64",
        "--reconnect",
        "--reconnect-max-delay",
        "--exec",
    ] {
        assert!(main.contains(flag), "{flag} missing from wsc --help");
    }
    for example in [
        "wsc -1 ",
        "--count 3",
        "--reconnect --no-close",
        "--exec 'jq",
        "wsc forward tcp-listen:",
    ] {
        assert!(
            main.contains(example),
            "no example with {example:?} in wsc --help"
        );
    }
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("--forward <tcp:HOST:PORT>"), "{serve}");
    assert!(serve.contains("e.g. --forward tcp:"), "{serve}");
    assert!(serve.contains("--exec <COMMAND>"), "{serve}");
    let forward = help(&["forward", "--help"]);
    assert!(
        forward.contains("Examples:\n  wsc forward tcp-listen:"),
        "{forward}"
    );
    assert!(forward.contains("--max-connections"), "{forward}");
}
