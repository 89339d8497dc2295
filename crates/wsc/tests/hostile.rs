//! Regression tests for defects found by attacking the client with hostile servers: each runs
//! a raw-TCP peer of its own through real sockets and asserts the outcome, a time bound and,
//! where the attack is about memory, a bound on the process's resident memory.
//!
//! The tests of this file run one at a time (they measure the process's memory).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsc::{Client, CloseCode, CloseReason, Error, Message};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte: nothing after the head is taken from the socket.
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "EOF in the request head");
        buf.push(b[0]);
    }
    String::from_utf8(buf).unwrap()
}

fn accept_reply(head: &str) -> String {
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .trim();
    let accept = wsc::proto::handshake::accept_key(key);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// A peer that accepts one connection, answers the upgrade with 101 followed by `after`
/// (in the same write) and hands the stream to `script`.
async fn peer<F, Fut, T>(after: Vec<u8>, script: F) -> (String, tokio::task::JoinHandle<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let mut reply = accept_reply(&head).into_bytes();
        reply.extend_from_slice(&after);
        s.write_all(&reply).await.unwrap();
        script(s).await
    });
    (url, h)
}

/// Reads client frames (masked) until a Close; returns the Close's code, if any arrived.
async fn close_code_from_client(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut d = wsc::proto::Decoder::new(wsc::proto::Role::Server, Default::default());
    let mut buf = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Ok(Some(f)) = d.decode(&mut buf) {
            if f.opcode == wsc::OpCode::Close {
                return Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
            }
        }
        match tokio::time::timeout_at(deadline, s.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// Defect 1: a server that sends Pings as fast as it can and never reads. The client owes at
/// most one Pong and stops reading while its output is stuck, so its memory stays flat.
#[test]
fn a_ping_flood_from_a_peer_that_never_reads_keeps_memory_flat() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let flood_for = Duration::from_secs(3);
        let (url, server) = peer(Vec::new(), move |mut s| async move {
            let ping = [0x89u8, 0x7d]
                .into_iter()
                .chain([b'p'; 125])
                .collect::<Vec<u8>>();
            let block: Vec<u8> = ping
                .iter()
                .copied()
                .cycle()
                .take(ping.len() * 512)
                .collect();
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < flood_for {
                match tokio::time::timeout(Duration::from_millis(100), s.write_all(&block)).await {
                    Ok(Ok(())) => sent += block.len() as u64,
                    Ok(Err(_)) => break,
                    Err(_) => {} // the client stopped reading: keep trying until the time is up
                }
            }
            sent
        })
        .await;
        let client = Client::builder()
            .close_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let mut session = client.connect(url).await.unwrap();
        let before = rss_kib();
        let sent = server.await.unwrap();
        let grew = rss_kib().saturating_sub(before);
        assert!(
            grew < 32 * 1024,
            "RSS grew {grew} KiB during a flood of {sent} bytes of pings"
        );
        // The session is still there and ends within its close timeout.
        let t = Instant::now();
        let _ = session.close(CloseReason::normal()).await;
        assert!(t.elapsed() < Duration::from_secs(5));
        while session.recv().await.is_some() {}
    });
}

/// Defect 2: with the outgoing queue full against a server that never reads, `close()` ends
/// within the close timeout counted from the call.
#[test]
fn close_with_a_full_queue_ends_within_the_close_timeout() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (url, server) = peer(Vec::new(), |s| async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            drop(s);
        })
        .await;
        let client = Client::builder()
            .close_timeout(Duration::from_secs(1))
            .outgoing_queue_capacity(64 * 1024)
            .build()
            .unwrap();
        let session = client.connect(url).await.unwrap();
        let chunk = vec![7u8; 32 * 1024];
        // Fill the socket and the queue until a send stays pending.
        while let Ok(r) =
            tokio::time::timeout(Duration::from_millis(200), session.send_binary(&chunk)).await
        {
            r.unwrap();
        }
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            session.close(CloseReason::normal()),
        )
        .await
        .expect("close() hung behind the full queue");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "close took {took:?}"
        );
        assert!(
            matches!(r, Err(Error::Timeout(wsc::TimeoutKind::Close))),
            "{r:?}"
        );
        server.abort();
    });
}

/// Defect 3: a protocol violation that arrives with the 101, before the application calls
/// `recv()`, fails the connection at once: the peer gets Close 1002 well before the (30 s)
/// close timeout.
#[test]
fn a_violation_glued_to_the_101_is_answered_at_once() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // An unknown opcode (0x3) from the server.
        let (url, server) = peer(vec![0x83, 0x00], |mut s| async move {
            let t = Instant::now();
            let code = close_code_from_client(&mut s, Duration::from_secs(10)).await;
            (code, t.elapsed())
        })
        .await;
        let client = Client::builder()
            .close_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut session = client.connect(url).await.unwrap();
        // The application is busy elsewhere; it does not call recv().
        let (code, took) = server.await.unwrap();
        assert_eq!(code, Some(1002));
        assert!(took < Duration::from_secs(2), "Close 1002 after {took:?}");
        let r = session.recv().await;
        assert!(matches!(r, Some(Err(Error::Protocol { .. }))), "{r:?}");
        // Defect 8: the outcome is published before anyone hears of the end.
        let reason = session.try_close_reason().expect("outcome published");
        assert_eq!(reason.code(), CloseCode::PROTOCOL_ERROR);
    });
}

/// Defect 8: whenever `recv()` returns the final error or `None`, the close reason is there.
#[test]
fn the_outcome_is_known_when_recv_ends() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for case in 0..30 {
            // Alternately a violation and a reset after a message.
            let after = if case % 2 == 0 {
                vec![0x81, 0x02, b'h', b'i', 0x83, 0x00]
            } else {
                vec![0x81, 0x02, b'h', b'i']
            };
            let (url, server) = peer(after, |s| async move {
                // Linger, then drop (a reset or an EOF without Close).
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(s);
            })
            .await;
            let mut session = Client::new().connect(url).await.unwrap();
            loop {
                match session.recv().await {
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        assert!(
                            session.try_close_reason().is_some(),
                            "case {case}: recv ended before the outcome was published"
                        );
                        break;
                    }
                }
            }
            server.await.unwrap();
        }
    });
}

/// Defect 9: when the server closes first, `recv() == None` means the echo is on the wire, so
/// a program that exits right after loses nothing.
#[test]
fn the_echo_is_written_before_recv_ends() {
    let _g = serial();
    for round in 0..10 {
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let url = rt.block_on(async {
            let (url, server) = peer(vec![0x88, 0x02, 0x03, 0xe8], |mut s| async move {
                close_code_from_client(&mut s, Duration::from_secs(5)).await
            })
            .await;
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                let _ = tx.send(rt.block_on(server));
            });
            url
        });
        // A program: connect, read to the end, exit at once (the runtime goes away).
        rt.block_on(async {
            let mut session = Client::new().connect(url).await.unwrap();
            while session.recv().await.is_some() {}
        });
        drop(rt);
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            got.ok().flatten(),
            Some(1000),
            "round {round}: the echo was lost"
        );
    }
}

/// Defect 4: a CR or LF in anything that becomes part of the request is refused before any
/// I/O, with an error that says which header.
#[test]
fn header_injection_is_refused_before_any_io() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let e = Client::builder()
            .user_agent(Some("wsc\r\nX-Injected: 1".into()))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("User-Agent"), "{e}");
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", l.local_addr().unwrap());
        let r = Client::new().request(url.as_str()).header("X-Note", "a\nb");
        assert!(matches!(r.connect().await, Err(Error::InvalidConfig(_))));
        let r = Client::new().request(url.as_str()).header("Bad Name", "x");
        assert!(matches!(r.connect().await, Err(Error::InvalidConfig(_))));
        // Nobody connected.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), l.accept())
                .await
                .is_err()
        );
    });
}

/// A message sent right before the Close is echoed: a well-behaved round through the same
/// peer helpers, so that a broken helper cannot make the tests above pass.
#[test]
fn the_fault_peer_itself_works() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (url, server) = peer(vec![0x81, 0x02, b'o', b'k'], |mut s| async move {
            let code = close_code_from_client(&mut s, Duration::from_secs(5)).await;
            s.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
            code
        })
        .await;
        let mut session = Client::new().connect(url).await.unwrap();
        assert_eq!(session.recv().await.unwrap().unwrap(), Message::text("ok"));
        session.close(CloseReason::normal()).await.unwrap();
        assert_eq!(server.await.unwrap(), Some(1000));
    });
}
