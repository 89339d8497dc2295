//! `wsc forward` and `wsc serve --forward`/`--exec` carrying real protocols, through the binary.

#[path = "../../wsc/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

/// A child process killed on drop, with the address from its first stderr line and the rest
/// of its stderr collected.
struct Proc(Child, String, Arc<Mutex<String>>);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        self.2.lock().unwrap().clone()
    }

    /// Peak resident memory (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Runs `wsc ARGS`, waits for its first stderr line and takes the address in it (the word
/// after `ws://` or `tcp://`).
fn wsc(args: &[&str]) -> Proc {
    let mut child = Command::cargo_bin("wsc")
        .unwrap()
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws://").or(w.strip_prefix("tcp://")))
        .unwrap_or_else(|| panic!("wsc said {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    Proc(child, addr, log)
}

/// `wsc serve --forward tcp:TO` and `wsc forward` in front of it: returns both (the TCP
/// address to connect to is the second's).
fn chain(to: &str) -> (Proc, Proc) {
    let serve = wsc(&[
        "serve",
        "127.0.0.1:0",
        "--forward",
        &format!("tcp:{to}"),
        "-v",
    ]);
    let url = format!("ws://{}/", serve.1);
    let forward = wsc(&["forward", "tcp-listen:127.0.0.1:0", &url, "-v"]);
    (serve, forward)
}

/// FNV-1a, 64 bits: the checksum both ends of a transfer compute.
fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Pseudo-random bytes (xorshift), different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn http_request_through_forward_and_serve_forward() {
    let port = common::free_port();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(common::workspace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (serve, forward) = chain(&format!("127.0.0.1:{port}"));
    let t = Instant::now();
    let mut s = TcpStream::connect(&forward.1).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /README.md HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // Half-close: the request is complete; the response still has to come back.
    s.shutdown(Shutdown::Write).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let elapsed = t.elapsed();
    let _ = http.kill();
    let _ = http.wait();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.0 200"), "{text:.200}");
    let readme = std::fs::read(common::workspace().join("README.md")).unwrap();
    assert!(response.ends_with(&readme), "the body is the file");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    // Both ends closed their session cleanly.
    std::thread::sleep(Duration::from_millis(200));
    assert!(serve.log().contains("closed 1000"), "{}", serve.log());
    assert!(forward.log().contains("closed 1000"), "{}", forward.log());
}

/// A TCP server that reads each connection to its end, then answers with the count and
/// checksum of what it read (16 bytes) and closes.
fn checksum_sink() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let (mut h, mut n, mut buf) = (FNV_START, 0u64, vec![0; 1 << 16]);
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            fnv(&mut h, &buf[..k]);
                            n += k as u64;
                        }
                    }
                }
                let _ = s.write_all(&n.to_be_bytes());
                let _ = s.write_all(&h.to_be_bytes());
            });
        }
    });
    addr
}

/// Sends `data` to `addr`, half-closes, and returns the sink's answer and the time it took.
fn send_to_sink(addr: &str, data: &[u8]) -> ((u64, u64), Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).unwrap();
    let n = u64::from_be_bytes(answer[..8].try_into().unwrap());
    let h = u64::from_be_bytes(answer[8..].try_into().unwrap());
    ((n, h), t.elapsed())
}

#[test]
fn hundred_mib_through_the_bridge_arrive_intact() {
    const LEN: usize = 100 << 20;
    let data = noise(7, LEN);
    let mut want = FNV_START;
    fnv(&mut want, &data);
    let sink = checksum_sink();
    let (serve, forward) = chain(&sink);

    let ((n, h), direct) = send_to_sink(&sink, &data);
    assert_eq!((n, h), (LEN as u64, want));
    let ((n, h), bridged) = send_to_sink(&forward.1, &data);
    assert_eq!(n, LEN as u64, "every byte arrived");
    assert_eq!(h, want, "the checksum matches");
    let mib = |d: Duration| LEN as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "100 MiB: direct TCP copy {:.0} MiB/s, through wsc forward + wsc serve --forward {:.0} MiB/s",
        mib(direct),
        mib(bridged)
    );
    assert!(bridged < Duration::from_secs(120), "{bridged:?}");
    // Neither end held the transfer in memory.
    for (name, p) in [("serve", &serve), ("forward", &forward)] {
        let rss = p.peak_rss_kib();
        println!("wsc {name}: peak RSS {rss} KiB");
        assert!(rss < 64 << 10, "wsc {name} peaked at {rss} KiB");
    }
}

/// A TCP echo server: writes back what it reads, shutting down writing at the end of input.
fn tcp_echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = s;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn twenty_connections_at_once_each_get_their_own_bytes_back() {
    const LEN: usize = 1 << 20;
    let echo = tcp_echo();
    let (_serve, forward) = chain(&echo);
    let t = Instant::now();
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            let addr = forward.1.clone();
            std::thread::spawn(move || {
                let data = noise(i + 100, LEN);
                let s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut w = s.try_clone().unwrap();
                let sent = data.clone();
                let writer = std::thread::spawn(move || {
                    w.write_all(&sent).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let mut back = Vec::new();
                (&s).read_to_end(&mut back).unwrap();
                writer.join().unwrap();
                assert!(back == data, "connection {i}: {} bytes back", back.len());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[test]
fn serve_forward_to_a_closed_port_closes_with_1011() {
    let port = common::free_port();
    let serve = wsc(&[
        "serve",
        "127.0.0.1:0",
        "--forward",
        &format!("tcp:127.0.0.1:{port}"),
    ]);
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .arg(format!("ws://{}/", serve.1))
        .write_stdin("x\n")
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1011"),
        "{out:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(serve.log().contains("cannot connect"), "{}", serve.log());
}

#[test]
fn forward_rejects_a_bad_listen_address() {
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(["forward", "127.0.0.1:0", "ws://127.0.0.1:1/"])
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `wsc ARGS` with `stdin`, bounded in time.
fn run(args: &[&str], stdin: &str) -> std::process::Output {
    assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap()
}

#[test]
fn exec_wires_a_program_to_a_python_websockets_echo() {
    let peer = common::python_server(&[]);
    let t = Instant::now();
    // The program's lines go out, come back as its stdin; its stderr is wsc's.
    let out = run(
        &[
            "--exec",
            r#"printf 'one\ntwo\n'; read a; read b; echo "got $a $b" >&2"#,
            &peer.url("/"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("got one two"),
        "{out:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn exec_program_failing_exits_9() {
    let peer = common::python_server(&[]);
    let out = run(
        &[
            "--exec",
            "echo hi; read x; echo \"$x\" >&2; exit 3",
            &peer.url("/"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hi\n"), "the echo reached the program: {err}");
    assert!(err.contains("exit status: 3"), "{err}");
}

#[test]
fn serve_exec_runs_a_program_per_session() {
    let serve = wsc(&[
        "serve",
        "127.0.0.1:0",
        "--exec",
        "while read l; do echo \"$l\" | tr a-z A-Z; done",
        "-v",
    ]);
    let url = format!("ws://{}/", serve.1);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let out = run(&[&url], &format!("hello {i}\nbye\n"));
                assert_eq!(out.status.code(), Some(0), "{out:?}");
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    format!("HELLO {i}\nBYE\n")
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Each client's Close closed the program's stdin, and tr exited by itself.
    let t = Instant::now();
    while serve.log().matches("exit status: 0").count() < 5 {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_exec_kills_a_program_that_outlives_its_session() {
    let serve = wsc(&["serve", "127.0.0.1:0", "--exec", "exec sleep 60", "-v"]);
    let t = Instant::now();
    let out = run(&[&format!("ws://{}/", serve.1), "--wait", "0s"], "x\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    while !serve.log().contains("signal: 9") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Killed after the grace period, not before.
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn serve_exec_program_exit_closes_the_session() {
    let serve = wsc(&["serve", "127.0.0.1:0", "--exec", "echo ready; exit 1"]);
    // The client is a program too, which prints what it receives on stderr and ends when
    // the session does.
    let out = run(&["--exec", "cat >&2", &format!("ws://{}/", serve.1)], "");
    // The program's failure is the server's 1011.
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("ready\n"), "{err}");
    assert!(err.contains("1011"), "{err}");
}

/// Current resident memory (VmRSS) of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_tcp_reader_holds_the_writer_back_without_buffering() {
    const LEN: usize = 64 << 20;
    // A sink that reads nothing for a while, then everything.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink = l.local_addr().unwrap().to_string();
    let reading = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let (mut h, mut n, mut buf) = (FNV_START, 0usize, vec![0; 1 << 16]);
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    fnv(&mut h, &buf[..k]);
                    n += k;
                }
            }
        }
        (n, h)
    });
    let (serve, forward) = chain(&sink);
    let data = noise(3, LEN);
    let mut want = FNV_START;
    fnv(&mut want, &data);
    let mut s = TcpStream::connect(&forward.1).unwrap();
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = written.clone();
    let writer = std::thread::spawn(move || {
        for chunk in data.chunks(1 << 16) {
            s.write_all(chunk).unwrap();
            progress.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
        s.shutdown(Shutdown::Write).unwrap();
    });
    std::thread::sleep(Duration::from_secs(2));
    // While the sink reads nothing, only socket buffers and the bridges' bounded queues hold
    // data: the writer is stopped far short of the end, and neither wsc grew.
    let stalled_at = written.load(std::sync::atomic::Ordering::Relaxed);
    let (serve_rss, forward_rss) = (rss_kib(serve.0.id()), rss_kib(forward.0.id()));
    println!(
        "stalled after {} KiB written; wsc serve {serve_rss} KiB, wsc forward {forward_rss} KiB",
        stalled_at >> 10
    );
    assert!(stalled_at < LEN / 2, "{stalled_at} bytes went in");
    assert!(serve_rss < 48 << 10, "wsc serve: {serve_rss} KiB");
    assert!(forward_rss < 48 << 10, "wsc forward: {forward_rss} KiB");
    writer.join().unwrap();
    assert_eq!(
        reading.join().unwrap(),
        (LEN, want),
        "all of it arrived, intact"
    );
}

#[test]
fn exec_line_over_the_largest_message_closes_with_1009() {
    let peer = common::python_server(&[]);
    let t = Instant::now();
    let out = run(
        &[
            "--max-message-size",
            "1000",
            "--exec",
            "head -c 5000 /dev/zero | tr '\\0' a; echo; exec sleep 30",
            &peer.url("/"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a line over 1000 bytes"),
        "{out:?}"
    );
    // The program was not waited for past its grace period.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn serve_forward_pings_its_clients() {
    let echo = tcp_echo();
    let serve = wsc(&[
        "serve",
        "127.0.0.1:0",
        "--forward",
        &format!("tcp:{echo}"),
        "--ping-interval",
        "200ms",
    ]);
    let out = assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        // One line sent, two replies awaited for a second: the session stays up to be pinged.
        .args(["-v", "--no-ping", "--count", "2", "--wait", "1s"])
        .arg(format!("ws://{}/", serve.1))
        .write_stdin("x\n")
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("< ping"), "{err}");
    assert!(err.contains("> pong"), "{err}");
}
