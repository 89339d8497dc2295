//! Bounded read-ahead: a frame header declaring a large length, followed by nothing, costs a
//! connection about a read step of address space, not the length it declares, in the server
//! role (a `server::accept` echo server in a child process under an address-space limit) and
//! in the client role.
//!
//! Address space (`VmSize`) is what is measured: the reservation a declared length would
//! make is not resident until bytes arrive, but it counts against `RLIMIT_AS`, and a failed
//! allocation aborts the whole process.
//!
//! The tests of this file run one at a time (they measure address space).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use wsc::{Client, CloseReason, Message};

/// Held across awaits (each test has its own runtime): tokio's lock.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// What the hostile peers declare: 60 MiB, within every limit the sessions here are given.
const DECLARED: u64 = 60 << 20;
/// The most address space a stalled connection may add.
const PER_CONNECTION: u64 = 8 << 20;
/// Marks the child process that runs the server (see `server_child`).
const CHILD: &str = "WSC_READ_AHEAD_SERVER_CHILD";

/// A process's address space (`VmSize`), in bytes.
fn vm_size(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib << 10
}

/// A binary frame's header declaring `len` bytes, masked with `key` if given, and no payload.
fn stalled_header(len: u64, key: Option<[u8; 4]>) -> Vec<u8> {
    let mut h = vec![0x82, 127 | if key.is_some() { 0x80 } else { 0 }];
    h.extend_from_slice(&len.to_be_bytes());
    if let Some(k) = key {
        h.extend_from_slice(&k);
    }
    h
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte: nothing after the head is taken from the socket.
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "EOF in the head");
        buf.push(b[0]);
    }
    String::from_utf8(buf).unwrap()
}

/// Not a test of its own: the echo server `server_role_...` runs in a child process, under
/// `prlimit`. It prints its port and serves until it is killed. Without [`CHILD`] set it
/// does nothing.
#[test]
fn server_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "listening on port {}",
            listener.local_addr().unwrap().port()
        );
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut session) = wsc::server::accept(s, &Default::default()).await else {
                    return;
                };
                while let Some(Ok(m)) = session.recv().await {
                    if session.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Kills the child server when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn echo_once(url: &str) {
    let mut s = Client::new().connect(url).await.unwrap();
    s.send(Message::text("still serving")).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .expect("the echo within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("still serving"));
    s.sender().close(CloseReason::normal()).await.unwrap();
}

/// 40 clients each send a header declaring 60 MiB and then nothing, to a server under a
/// 1 GiB address-space limit: each adds less than 8 MiB, and the server still echoes for a
/// well-behaved client.
#[tokio::test]
async fn server_role_reserves_for_bytes_that_arrived_not_for_declared_lengths() {
    let _g = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .arg("--")
        .arg(exe)
        .args(["--exact", "server_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) is needed");
    let mut child = Killed(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server ended");
        // After libtest's "test server_child ... " on the same line.
        if let Some((_, p)) = line.trim().split_once("listening on port ") {
            break p.parse::<u16>().unwrap();
        }
    };
    let pid = child.0.id().to_string();
    let url = format!("ws://127.0.0.1:{port}/");
    // The server's runtime and first session are made before the baseline.
    echo_once(&url).await;
    let before = vm_size(&pid);

    let mut stalled = Vec::new();
    for i in 0..40u8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s.write_all(&stalled_header(DECLARED, Some([1, 2, 3, i])))
            .await
            .unwrap();
        stalled.push(s);
    }
    // Each header has been read by the time a later connection's handshake is answered (one
    // thread serves them all); a moment more for the last one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the server ended with 40 stalled frames"
    );
    let after = vm_size(&pid);
    let grown = after.saturating_sub(before);
    println!(
        "server: VmSize {} KiB -> {} KiB, {} KiB per stalled connection",
        before >> 10,
        after >> 10,
        (grown / 40) >> 10
    );
    assert!(
        grown < 40 * PER_CONNECTION,
        "40 stalled connections grew the address space by {} MiB",
        grown >> 20
    );
    echo_once(&url).await;
    drop(stalled);
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// 8 sessions whose server sends a header declaring 60 MiB (within the sessions'
/// `max_frame_size`) and then nothing: each adds less than 8 MiB of address space.
#[tokio::test]
async fn client_role_reserves_for_bytes_that_arrived_not_for_declared_lengths() {
    let _g = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let peer = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let head = read_head(&mut s).await;
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_owned();
            let accept = wsc_proto::handshake::accept_key(&key);
            let mut reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            reply.extend_from_slice(&stalled_header(DECLARED, None));
            s.write_all(&reply).await.unwrap();
            held.push(s);
        }
    });
    let client = Client::builder().max_frame_size(64 << 20).build().unwrap();
    // One session first, so that what any session needs once (threads, the resolver) is in
    // the baseline.
    let first = client.connect(url.as_str()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = vm_size("self");
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(client.connect(url.as_str()).await.unwrap());
    }
    // The drivers read the headers as soon as this task waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = vm_size("self");
    let grown = after.saturating_sub(before);
    println!(
        "client: VmSize {} KiB -> {} KiB, {} KiB per stalled session",
        before >> 10,
        after >> 10,
        (grown / 8) >> 10
    );
    assert!(
        grown < 8 * PER_CONNECTION,
        "8 stalled sessions grew the address space by {} MiB",
        grown >> 20
    );
    for s in &sessions {
        assert!(s.sender().is_open(), "a session ended");
    }
    drop(sessions);
    peer.abort();
    assert!(started.elapsed() < Duration::from_secs(30));
}
