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
    let accept = wsc_proto::handshake::accept_key(key);
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
    let mut d = wsc_proto::Decoder::new(wsc_proto::Role::Server, Default::default());
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
    for round in 0..5 {
        // The peer lives on a runtime of its own, which outlives the client's. It closes first
        // while the client still has data queued behind a full socket, and reads only later:
        // the echo can go out only after all of that.
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let peer_thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let (url, server) = peer(Vec::new(), |mut s| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    s.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    close_code_from_client(&mut s, Duration::from_secs(5)).await
                })
                .await;
                url_tx.send(url).unwrap();
                server.await.unwrap()
            })
        });
        let url = url_rx.recv().unwrap();
        // A program: connect, send, read to the end, exit at once (the runtime goes away).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = Client::builder()
                .outgoing_queue_capacity(16 << 20)
                .build()
                .unwrap();
            let mut session = client.connect(url).await.unwrap();
            for _ in 0..4 {
                session.send_binary(&[1u8; 1 << 20]).await.unwrap();
            }
            while session.recv().await.is_some() {}
        });
        drop(rt);
        let got = peer_thread.join().unwrap();
        assert_eq!(got, Some(1000), "round {round}: the echo was lost");
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

/// A server that resets the connection: the error says it happened while reading, and the
/// chain says how ("reading: Connection reset by peer (os error 104)").
#[test]
fn a_reset_says_it_happened_while_reading() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (url, server) = peer(vec![0x81, 0x02, b'h', b'i'], |s| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Linger 0: closing sends RST instead of FIN.
            s.set_zero_linger().unwrap();
            drop(s);
        })
        .await;
        let mut session = Client::new().connect(url).await.unwrap();
        assert_eq!(session.recv().await.unwrap().unwrap(), Message::text("hi"));
        let t = std::time::Instant::now();
        let err = match session.recv().await {
            Some(Err(e)) => e,
            other => panic!("{other:?}"),
        };
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(
                &err,
                Error::Io {
                    context: wsc::IoContext::Reading,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.chain().to_string(),
            "reading: Connection reset by peer (os error 104)"
        );
        // The operating system's own error, not one rebuilt from its kind and text: its code
        // is there, and a send after it reports the very same error.
        let Error::Io { source, .. } = &err else {
            unreachable!()
        };
        assert_eq!(source.raw_os_error(), Some(104));
        match session.sender().send("late").await {
            Err(Error::Io { source: again, .. }) => assert!(std::sync::Arc::ptr_eq(source, &again)),
            other => panic!("{other:?}"),
        }
        server.await.unwrap();
    });
}

/// A server that stops in the middle of a frame and never answers: keepalive ends the session
/// with 1011 within the ping interval plus its timeout.
#[test]
fn a_server_that_stalls_mid_frame_is_timed_out_by_keepalive() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The header of a 100-byte text frame and 10 bytes of it.
        let mut after = vec![0x81, 100];
        after.extend_from_slice(b"0123456789");
        let (url, server) = peer(after, |mut s| async move {
            close_code_from_client(&mut s, Duration::from_secs(10)).await
        })
        .await;
        let client = Client::builder()
            .ping_interval(Some(Duration::from_millis(300)))
            .ping_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let mut session = client.connect(url).await.unwrap();
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), session.recv())
            .await
            .expect("recv() waited forever on a stalled server");
        assert!(
            matches!(r, Some(Err(Error::Timeout(wsc::TimeoutKind::Ping)))),
            "{r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(server.await.unwrap(), Some(1011));
    });
}

/// A frame trickled a byte at a time arrives whole.
#[test]
fn a_frame_trickled_a_byte_at_a_time_arrives_whole() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let text = "trickle ".repeat(40);
        let mut frame = vec![0x81, 126];
        frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
        frame.extend_from_slice(text.as_bytes());
        let (url, server) = peer(Vec::new(), move |mut s| async move {
            for b in frame {
                s.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            s.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
            close_code_from_client(&mut s, Duration::from_secs(5)).await
        })
        .await;
        let mut session = Client::new().connect(url).await.unwrap();
        let t = Instant::now();
        assert_eq!(
            session.recv().await.unwrap().unwrap(),
            Message::text(text.as_str())
        );
        assert!(session.recv().await.is_none());
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(server.await.unwrap(), Some(1000));
    });
}

/// A server that sends a valid Close and then keeps sending data: the session ends normally,
/// nothing after the Close is delivered, and the echo goes out.
#[test]
fn data_after_the_servers_close_is_ignored() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut after = vec![0x81, 0x03, b'o', b'n', b'e', 0x88, 0x02, 0x03, 0xe8];
        for _ in 0..1000 {
            after.extend_from_slice(&[0x81, 0x05, b'l', b'a', b't', b'e', b'r']);
        }
        let (url, server) = peer(after, |mut s| async move {
            let code = close_code_from_client(&mut s, Duration::from_secs(5)).await;
            // And more, after the echo.
            let _ = s.write_all(&[0x81, 0x01, b'x']).await;
            code
        })
        .await;
        let mut session = Client::new().connect(url).await.unwrap();
        let t = Instant::now();
        assert_eq!(session.recv().await.unwrap().unwrap(), Message::text("one"));
        assert!(session.recv().await.is_none(), "nothing after the Close");
        assert_eq!(session.close_reason().await.code(), CloseCode::NORMAL);
        assert!(t.elapsed() < Duration::from_secs(6));
        assert_eq!(server.await.unwrap(), Some(1000));
    });
}

/// A flood of one-byte fragments: the message limit ends it with 1009, memory stays bounded.
#[test]
fn a_flood_of_tiny_fragments_hits_the_message_limit() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (url, server) = peer(Vec::new(), |mut s| async move {
            let mut block = vec![0x02, 0x01, b'a'];
            for _ in 0..100_000 {
                block.extend_from_slice(&[0x00, 0x01, b'a']);
            }
            let _ = s.write_all(&block).await;
            close_code_from_client(&mut s, Duration::from_secs(10)).await
        })
        .await;
        let client = Client::builder()
            .max_message_size(64 * 1024)
            .build()
            .unwrap();
        let before = rss_kib();
        let mut session = client.connect(url).await.unwrap();
        let t = Instant::now();
        let r = session.recv().await;
        assert!(matches!(r, Some(Err(Error::MessageTooBig { .. }))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(server.await.unwrap(), Some(1009));
        let grew = rss_kib().saturating_sub(before);
        assert!(grew < 16 * 1024, "RSS grew {grew} KiB");
    });
}

/// A proxy of the tests' own that cuts the connection after `cut` bytes, under a stream of
/// numbered messages: every message the session reports is intact and in order, and the error
/// says the connection ended without a Close.
#[test]
fn a_connection_cut_mid_stream_loses_nothing_it_reported() {
    let _g = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for cut in [1_000usize, 4_093, 65_537, 300_001] {
            // The server: numbered messages, 0.., forever.
            let (upstream, _server) = peer(Vec::new(), |mut s| async move {
                let mut i = 0u32;
                loop {
                    let text = format!("message {i:08} {}", "x".repeat((i % 200) as usize));
                    let mut f = vec![0x81, 126];
                    f.extend_from_slice(&(text.len() as u16).to_be_bytes());
                    f.extend_from_slice(text.as_bytes());
                    if s.write_all(&f).await.is_err() {
                        return;
                    }
                    i += 1;
                }
            })
            .await;
            let up = upstream
                .trim_start_matches("ws://")
                .trim_end_matches('/')
                .to_owned();
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/", l.local_addr().unwrap());
            tokio::spawn(async move {
                let (mut c, _) = l.accept().await.unwrap();
                let mut u = TcpStream::connect(up).await.unwrap();
                let (mut cr, mut cw) = c.split();
                let (mut ur, mut uw) = u.split();
                let to_server = tokio::io::copy(&mut cr, &mut uw);
                let to_client = async {
                    // The head and the frames, cut after `cut` bytes past the 101.
                    let mut b = vec![0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = ur.read(&mut b).await.unwrap();
                        head.extend_from_slice(&b[..n]);
                    }
                    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let mut budget = cut + end;
                    let first = head.len().min(budget);
                    cw.write_all(&head[..first]).await.unwrap();
                    budget -= first;
                    while budget > 0 {
                        let n = ur.read(&mut b[..budget.min(4096)]).await.unwrap();
                        cw.write_all(&b[..n]).await.unwrap();
                        budget -= n;
                    }
                };
                tokio::select! { _ = to_server => {}, _ = to_client => {} }
                // Dropping both ends cuts the connection.
            });
            let before = rss_kib();
            let mut session = Client::new().connect(url).await.unwrap();
            let t = Instant::now();
            let mut next = 0u32;
            let err = loop {
                match session.recv().await {
                    Some(Ok(Message::Text(t))) => {
                        let expect =
                            format!("message {next:08} {}", "x".repeat((next % 200) as usize));
                        assert_eq!(t.as_str(), expect, "cut {cut}: message {next} damaged");
                        next += 1;
                    }
                    Some(Ok(other)) => panic!("unexpected {other:?}"),
                    Some(Err(e)) => break e,
                    None => panic!("cut {cut}: a cut connection ended as if closed cleanly"),
                }
            };
            assert!(next > 0 || cut < 300, "cut {cut}: nothing arrived");
            let shown = err.chain().to_string();
            assert!(
                matches!(err, Error::ClosedAbnormally)
                    && shown == "connection closed without a Close frame",
                "cut {cut}: {shown}"
            );
            assert!(t.elapsed() < Duration::from_secs(5));
            assert!(rss_kib().saturating_sub(before) < 32 * 1024);
        }
    });
}
