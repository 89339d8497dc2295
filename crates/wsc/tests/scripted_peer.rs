//! Conversations with a scripted TCP peer, for what a well-behaved server never does:
//! frames glued to the 101, a wrong accept hash, an unoffered subprotocol, silence.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsc::{Client, CloseCode, Error, Message, TimeoutKind};

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&b[..n]);
    }
    String::from_utf8(buf).unwrap()
}

fn key_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .trim()
        .to_owned()
}

/// Serves one connection with `reply(request head)` written in a single write.
async fn one_shot(
    reply: impl FnOnce(String) -> Vec<u8> + Send + 'static,
) -> (String, tokio::task::JoinHandle<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        s.write_all(&reply(head)).await.unwrap();
        s
    });
    (url, h)
}

fn switching(key: &str, extra: &str) -> String {
    let accept = wsc_proto::handshake::accept_key(key);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn frames_glued_to_the_101_are_not_lost() {
    let (url, server) = one_shot(|head| {
        let mut r = switching(&key_of(&head), "").into_bytes();
        r.extend_from_slice(b"\x81\x05first\x82\x03\x01\x02\x03");
        r
    })
    .await;
    let mut s = Client::new().connect(url).await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap(), Message::text("first"));
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    drop(server);
}

#[tokio::test]
async fn request_has_the_rfc_6455_headers() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (url, _server) = one_shot(move |head| {
        let r = switching(&key_of(&head), "").into_bytes();
        let _ = tx.send(head);
        r
    })
    .await;
    let _s = Client::new()
        .request(url)
        .header("X-Custom", "1")
        .connect()
        .await
        .unwrap();
    let head = rx.await.unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"));
    for h in [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "X-Custom: 1",
        "Host: 127.0.0.1:",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    let key = key_of(&head);
    assert_eq!(base64_len(&key), 16);
}

fn base64_len(k: &str) -> usize {
    // 16 bytes encode to 24 characters with two '=' of padding.
    if k.len() == 24 && k.ends_with("==") {
        16
    } else {
        0
    }
}

#[tokio::test]
async fn wrong_accept_hash_is_refused() {
    let (url, _s) = one_shot(|_| switching("not-the-key", "").into_bytes()).await;
    assert!(matches!(
        Client::new().connect(url).await,
        Err(Error::Handshake(wsc::HandshakeError::BadAccept(_)))
    ));
}

#[tokio::test]
async fn unoffered_subprotocol_or_extension_is_refused() {
    let (url, _s) =
        one_shot(|h| switching(&key_of(&h), "Sec-WebSocket-Protocol: chat\r\n").into_bytes()).await;
    assert!(matches!(
        Client::new().connect(url).await,
        Err(Error::Handshake(wsc::HandshakeError::UnofferedProtocol(_)))
    ));
    let (url, _s) = one_shot(|h| {
        switching(
            &key_of(&h),
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        )
        .into_bytes()
    })
    .await;
    assert!(matches!(
        Client::new().connect(url).await,
        Err(Error::Handshake(wsc::HandshakeError::Extension(_)))
    ));
}

#[tokio::test]
async fn handshake_timeout_on_a_silent_server() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let client = Client::builder()
        .handshake_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    assert!(matches!(
        client.connect(&url).await,
        Err(Error::Timeout(TimeoutKind::Handshake))
    ));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn protocol_violation_fails_with_1002_after_earlier_messages() {
    let (url, server) = one_shot(|head| {
        let mut r = switching(&key_of(&head), "").into_bytes();
        r.extend_from_slice(b"\x81\x02ok\x83\x00"); // a message, then reserved opcode 3
        r
    })
    .await;
    let mut s = Client::new().connect(url).await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap(), Message::text("ok"));
    match s.recv().await {
        Some(Err(Error::Protocol { code, .. })) => assert_eq!(code, CloseCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
    // The Close we sent carries 1002.
    let mut sock = server.await.unwrap();
    let mut b = [0u8; 4];
    sock.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], 0x88);
    let mut rest = vec![0u8; usize::from(b[1] & 0x7f) + 4 - 2];
    sock.read_exact(&mut rest).await.unwrap();
    let mask = [b[2], b[3], rest[0], rest[1]];
    let code = u16::from_be_bytes([rest[2] ^ mask[0], rest[3] ^ mask[1]]);
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn dropped_connection_reads_as_1006() {
    let (url, server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let mut s = Client::new().connect(url).await.unwrap();
    drop(server.await.unwrap());
    // No Close frame and no error from the operating system: no I/O error is made up.
    let e = match tokio::time::timeout(Duration::from_secs(5), s.recv()).await {
        Ok(Some(Err(e @ Error::ClosedAbnormally))) => e,
        other => panic!("{other:?}"),
    };
    assert!(std::error::Error::source(&e).is_none());
    // One wording for the cause, in the error and in the close reason alike.
    let reason = s.close_reason().await;
    assert_eq!(reason.code(), CloseCode::CLOSED_ABNORMALLY);
    assert_eq!(reason.reason(), e.to_string());
    assert_eq!(
        e.chain().to_string(),
        "connection closed without a Close frame"
    );
}

#[tokio::test]
async fn a_sink_closed_after_a_failure_returns_the_failure() {
    use futures_util::SinkExt;
    let (url, _server) = one_shot(|head| {
        let mut r = switching(&key_of(&head), "").into_bytes();
        r.extend_from_slice(b"\x83\x00"); // reserved opcode 3: the session fails with 1002
        r
    })
    .await;
    let mut s = Client::new().connect(url).await.unwrap();
    assert!(matches!(s.recv().await, Some(Err(Error::Protocol { .. }))));
    let mut sink = s.sender();
    match tokio::time::timeout(Duration::from_secs(5), SinkExt::close(&mut sink)).await {
        Ok(Err(Error::Protocol { code, .. })) => assert_eq!(code, CloseCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_sink_closed_normally_returns_ok() {
    use futures_util::SinkExt;
    // The server echoes our Close, then closes TCP.
    let (url, server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let mut s = Client::new().connect(url).await.unwrap();
    let peer = tokio::spawn(async move {
        let mut sock = server.await.unwrap();
        let mut b = [0u8; 8];
        sock.read_exact(&mut b).await.unwrap(); // masked Close 1000: 2 + 4 + 2 bytes
        assert_eq!(b[0], 0x88);
        sock.write_all(b"\x88\x02\x03\xe8").await.unwrap();
    });
    let mut sink = s.sender();
    let r = tokio::time::timeout(Duration::from_secs(5), SinkExt::close(&mut sink)).await;
    assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    peer.await.unwrap();
    assert!(s.recv().await.is_none());
}

#[tokio::test]
async fn misuse_on_a_live_session_names_what_was_misused() {
    use futures_util::Sink;
    use wsc::{Frame, Misuse, OpCode};
    let (url, _server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let s = Client::new().connect(url).await.unwrap();
    let tx = s.sender();
    let e = tx.send_fragmented("abc", 0).await.unwrap_err();
    assert!(
        matches!(e, Error::Misuse(Misuse::ZeroFragmentSize)),
        "{e:?}"
    );
    let e = tx.message_writer(OpCode::Ping).await.unwrap_err();
    assert!(
        matches!(e, Error::Misuse(Misuse::NotDataOpcode(OpCode::Ping))),
        "{e:?}"
    );
    let too_big = Frame::ping(vec![0u8; 126]);
    let e = tx.send_frame(too_big).await.unwrap_err();
    assert!(matches!(e, Error::Misuse(Misuse::InvalidFrame)), "{e:?}");
    // A streamed message holds the connection: a Sink's send without poll_ready is refused.
    let mut w = tx.message_writer(OpCode::Binary).await.unwrap();
    w.write(b"first piece").await.unwrap();
    let mut sink = tx.clone();
    let e = std::pin::Pin::new(&mut sink)
        .start_send(Message::text("interleaved"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Misuse(Misuse::StreamInProgress)),
        "{e:?}"
    );
    assert_eq!(
        e.chain().to_string(),
        "invalid use of the API: a streamed message holds the connection; data waits until it \
         finishes"
    );
    w.finish().await.unwrap();
    // None of it ended the session.
    assert!(tx.is_open());
}

/// An extension that cannot encode anything, to see how its failure is reported.
#[derive(Debug)]
struct Broken;

impl wsc::Extension for Broken {
    fn name(&self) -> &'static str {
        "x-broken"
    }
    fn rsv(&self) -> u8 {
        0x40
    }
    fn describe(&self) -> String {
        "x-broken".into()
    }
    fn encode(&mut self, _: wsc::OpCode, _: &[u8]) -> Result<Option<&[u8]>, String> {
        Err("out of room".into())
    }
    fn decode(
        &mut self,
        _: &[u8],
        _: bool,
        _: &mut Vec<u8>,
        _: usize,
    ) -> Result<(), wsc::DecodeError> {
        Ok(())
    }
}

impl wsc::ExtensionFactory for Broken {
    fn name(&self) -> &'static str {
        "x-broken"
    }
    fn rsv(&self) -> u8 {
        0x40
    }
    fn offer(&self) -> String {
        "x-broken".into()
    }
    fn accept(&self, _: &[wsc::ExtensionParam]) -> Result<Box<dyn wsc::Extension>, String> {
        Ok(Box::new(Broken))
    }
}

#[tokio::test]
async fn an_extension_that_fails_to_encode_is_named_not_called_a_configuration_error() {
    let (url, _server) = one_shot(|head| {
        switching(&key_of(&head), "Sec-WebSocket-Extensions: x-broken\r\n").into_bytes()
    })
    .await;
    let client = Client::builder().extension(Broken).build().unwrap();
    let s = client.connect(url).await.unwrap();
    let e = s.sender().send("never encoded").await.unwrap_err();
    assert!(matches!(e, Error::Extension(_)), "{e:?}");
    assert_eq!(
        e.chain().to_string(),
        "extension x-broken failed to encode: out of room"
    );
}

#[tokio::test]
async fn ping_settings_read_none_only_when_pinging_is_off() {
    let (url, _server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let s = Client::builder()
        .ping_timeout(Duration::from_secs(7))
        .build()
        .unwrap()
        .connect(url)
        .await
        .unwrap();
    let tx = s.sender();
    assert_eq!(tx.ping_interval(), Some(Duration::from_secs(20)));
    assert_eq!(tx.ping_timeout(), Some(Duration::from_secs(7)));
    tx.set_ping_timeout(Duration::from_secs(3));
    assert_eq!(tx.ping_timeout(), Some(Duration::from_secs(3)));
    // Off: no pings, so nothing times out, and both read None.
    tx.set_ping_interval(None);
    assert_eq!((tx.ping_interval(), tx.ping_timeout()), (None, None));
    // On again: the timeout set before applies.
    tx.set_ping_interval(Some(Duration::from_secs(1)));
    assert_eq!(tx.ping_timeout(), Some(Duration::from_secs(3)));
    // A zero timeout is refused when building, as a zero interval is.
    let zero = Client::builder().ping_timeout(Duration::ZERO).build();
    assert!(matches!(zero, Err(Error::InvalidConfig(_))), "{zero:?}");
}

#[tokio::test]
async fn bad_urls_fail_before_any_io() {
    for bad in ["http://127.0.0.1/", "ws://", "ws://h/#frag", "nonsense"] {
        assert!(
            matches!(
                Client::new().connect(bad).await,
                Err(Error::InvalidUrl { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        Client::new()
            .request("ws://h/")
            .header("Upgrade", "x")
            .connect()
            .await,
        Err(Error::InvalidConfig(_))
    ));
    assert!(Client::builder().max_frame_size(0).build().is_err());
}

#[tokio::test]
async fn backpressure_bounds_the_outgoing_queue() {
    // A server that accepts and never reads: sends must start waiting, not grow memory.
    let (url, _server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let client = Client::builder()
        .outgoing_queue_capacity(64 * 1024)
        .build()
        .unwrap();
    let s = client.connect(url).await.unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut sent = 0usize;
    let r = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            s.send_binary(&chunk).await.unwrap();
            sent += chunk.len();
        }
    })
    .await;
    assert!(r.is_err(), "sends never waited");
    // Socket buffers absorb some megabytes; the queue itself stays bounded.
    assert!(
        sent < 64 << 20,
        "sent {sent} bytes into a peer that never reads"
    );
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sends_never_wait_for_a_timer_to_wake_the_writer() {
    // Regression: finishing a large write did not count as progress, so the writer could go to
    // sleep with messages queued behind it until an unrelated timer (about a second) woke it.
    // Several messages queue behind each large write (a 1 MiB queue of 64 KiB messages).
    const N: usize = 3200;
    const SIZE: usize = 64 * 1024;
    let (url, server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let s = Client::new().connect(url).await.unwrap();
    // The peer reads on its own thread, as a server in another process would.
    let sock = server.await.unwrap().into_std().unwrap();
    sock.set_nonblocking(false).unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let want = N * (SIZE + 14);
        let mut got = 0;
        let mut b = vec![0u8; 1 << 16];
        let mut sock = sock;
        while got < want {
            let n = sock.read(&mut b).unwrap();
            assert!(n > 0);
            got += n;
        }
        got
    });
    let payload = vec![1u8; SIZE];
    let start = Instant::now();
    for _ in 0..N {
        s.send_binary(&payload).await.unwrap();
    }
    s.flush().await.unwrap();
    assert_eq!(reader.join().unwrap(), N * (SIZE + 14));
    // Not a speed assertion: the stalled writer needed about a second per queued batch.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "stalled: {:?}",
        start.elapsed()
    );
    s.terminate();
}

/// What a server sends in `mixed_stream`: the bytes, the messages a default session must
/// deliver, the frames a raw session must show, and the pings it holds.
#[derive(Default)]
struct Mixed {
    wire: Vec<u8>,
    messages: Vec<Message>,
    frames: Vec<wsc::Frame>,
    pings: Vec<Vec<u8>>,
}

impl Mixed {
    /// Puts `f` on the wire, unmasked, as a server sends it.
    fn push(&mut self, f: wsc::Frame) {
        let mut b = bytes::BytesMut::new();
        wsc_proto::encode_frame(&mut b, f.opcode, f.fin, f.rsv, &f.payload, None);
        self.wire.extend_from_slice(&b);
        self.frames.push(f);
    }
}

/// Thousands of small messages (which the driver hands over in runs) with pings, a
/// fragmented message, 16-bit lengths, a 20 KiB message and empty ones in between, then a Close.
fn mixed_stream() -> Mixed {
    use wsc::Frame;
    let mut m = Mixed::default();
    let push = Mixed::push;
    for i in 0..3000u32 {
        let msg = match i % 7 {
            0 => Message::text(format!("héllo {i}")),
            1 => Message::binary(vec![(i % 251) as u8; (i % 300) as usize]),
            2 => Message::text(""),
            _ => Message::binary(i.to_be_bytes().to_vec()),
        };
        push(&mut m, Frame::new(msg.opcode(), msg.as_bytes().to_vec()));
        m.messages.push(msg);
        if i % 97 == 0 {
            let p = i.to_be_bytes().to_vec();
            push(&mut m, Frame::ping(p.clone()));
            m.pings.push(p);
        }
        if i == 1000 {
            push(&mut m, Frame::text("frag").with_fin(false));
            push(&mut m, Frame::pong("unsolicited"));
            push(&mut m, Frame::continuation("men", false));
            push(&mut m, Frame::continuation("ted", true));
            m.messages.push(Message::text("fragmented"));
        }
        if i == 2000 {
            let big = vec![7u8; 20 * 1024];
            push(&mut m, Frame::binary(big.clone()));
            m.messages.push(Message::binary(big));
        }
    }
    push(&mut m, Frame::close(Some(&wsc::CloseReason::normal())));
    m
}

/// Large frames of repeating and changing sizes (the driver reads several into one buffer and
/// guesses the next one's size from the last), a fragmented large message and pings in
/// between, then a Close. Every payload is distinct, so a frame landing in the wrong place shows.
fn large_stream() -> Mixed {
    use wsc::Frame;
    let mut m = Mixed::default();
    let push = Mixed::push;
    let sizes = [
        65536, 65536, 65536, 65536, 100_000, 16384, 300_000, 20000, 65535, 65536,
    ];
    for i in 0..60usize {
        let size = sizes[i % sizes.len()] + i / sizes.len();
        let body: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
        if i % 4 == 3 {
            let text = String::from_utf8(body.iter().map(|b| b'a' + b % 26).collect()).unwrap();
            push(&mut m, Frame::text(text.clone()));
            m.messages.push(Message::text(text));
        } else {
            push(&mut m, Frame::binary(body.clone()));
            m.messages.push(Message::binary(body));
        }
        if i % 9 == 0 {
            let p = (i as u32).to_be_bytes().to_vec();
            push(&mut m, Frame::ping(p.clone()));
            m.pings.push(p);
        }
        if i == 30 {
            let a = vec![1u8; 40_000];
            let b = vec![2u8; 50_000];
            push(&mut m, Frame::binary(a.clone()).with_fin(false));
            push(&mut m, Frame::continuation(b.clone(), true));
            m.messages.push(Message::binary([a, b].concat()));
        }
    }
    push(&mut m, Frame::close(Some(&wsc::CloseReason::normal())));
    m
}

#[tokio::test]
async fn a_stream_of_large_frames_arrives_whole_and_in_order() {
    a_default_session_gets_all_of(large_stream(), Client::new()).await;
}

#[tokio::test]
async fn a_raw_session_shows_every_large_frame() {
    a_raw_session_shows_all_of(large_stream()).await;
}

/// Large frames that share read buffers, most dropped as soon as they arrive and some kept:
/// the driver reuses a buffer once every frame cut out of it is gone, so a kept frame must
/// never be written over and a reused buffer must carry the frame in progress across.
fn shared_buffer_stream() -> Mixed {
    let mut m = Mixed::default();
    let sizes = [65536, 65536, 40_000, 100_000, 16384, 131_000, 65536, 16385];
    for i in 0..240usize {
        let size = sizes[i % sizes.len()];
        let body: Vec<u8> = (0..size)
            .map(|j| (j * 13 + i * 101 + j / 251) as u8)
            .collect();
        m.push(wsc::Frame::binary(body.clone()));
        m.messages.push(Message::binary(body));
    }
    m.push(wsc::Frame::close(Some(&wsc::CloseReason::normal())));
    m
}

#[tokio::test]
async fn large_frames_dropped_on_arrival_free_buffers_that_never_touch_kept_frames() {
    let m = shared_buffer_stream();
    let (url, server) = serve_mixed(m.wire.clone()).await;
    let mut s = Client::new().connect_raw(url).await.unwrap();
    let mut kept = Vec::new();
    let mut n = 0;
    while let Some(f) = s.recv().await {
        let f = f.unwrap();
        if f.opcode == wsc::OpCode::Close {
            s.send_frame(wsc::Frame::close(Some(&wsc::CloseReason::normal())))
                .await
                .unwrap();
            continue;
        }
        assert!(f == m.frames[n], "frame {n} differs on arrival");
        if n % 7 == 0 {
            kept.push((n, f));
        }
        n += 1;
        if n % 5 == 0 {
            // Let the driver read ahead while this task holds nothing but the kept frames.
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(n, m.frames.len() - 1);
    for (i, f) in &kept {
        assert!(
            *f == m.frames[*i],
            "kept frame {i} was changed after it arrived"
        );
    }
    server.await.unwrap();

    // The same through a default session, which reassembles and delivers messages.
    let (url, server) = serve_mixed(m.wire.clone()).await;
    let mut s = Client::new().connect(url).await.unwrap();
    let mut kept = Vec::new();
    let mut n = 0;
    while let Some(msg) = s.recv().await {
        let msg = msg.unwrap();
        assert!(msg == m.messages[n], "message {n} differs on arrival");
        if n % 5 == 0 {
            kept.push((n, msg));
        }
        n += 1;
    }
    assert_eq!(n, m.messages.len());
    for (i, msg) in &kept {
        assert!(
            *msg == m.messages[*i],
            "kept message {i} was changed after it arrived"
        );
    }
    server.await.unwrap();
}

/// Serves `wire` after the 101 in one write, then collects every frame the client sends
/// up to its Close.
async fn serve_mixed(wire: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<wsc::Frame>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let mut out = switching(&key_of(&head), "").into_bytes();
        out.extend_from_slice(&wire);
        s.write_all(&out).await.unwrap();
        let mut d = wsc_proto::Decoder::new(wsc_proto::Role::Server, Default::default());
        let mut buf = bytes::BytesMut::new();
        let mut got = Vec::new();
        // Until the client's Close, then close TCP as a server does (RFC 6455 §7.1.1).
        'read: while s.read_buf(&mut buf).await.unwrap() > 0 {
            while let Some(f) = d.decode(&mut buf).unwrap() {
                let close = f.opcode == wsc::OpCode::Close;
                got.push(f);
                if close {
                    break 'read;
                }
            }
        }
        got
    });
    (url, h)
}

#[tokio::test]
async fn a_mixed_stream_arrives_whole_and_in_order() {
    // A small incoming queue, so reading stops and resumes many times along the way.
    let client = Client::builder()
        .incoming_queue_capacity(16)
        .build()
        .unwrap();
    a_default_session_gets_all_of(mixed_stream(), client).await;
}

#[tokio::test]
async fn a_raw_session_shows_every_frame_of_a_mixed_stream() {
    a_raw_session_shows_all_of(mixed_stream()).await;
}

/// Pongs answer pings in order, never more than one per ping, and the last ping is answered:
/// RFC 6455 §5.5.3 lets a Pong owed be replaced by the answer to a later Ping, which is how
/// the client keeps what a ping flood makes it owe to one frame.
fn answers_latest_pings(pongs: &[Vec<u8>], pings: &[Vec<u8>]) {
    let mut rest = pings.iter();
    for p in pongs {
        assert!(
            rest.any(|q| q == p),
            "pong {p:?} answers no ping after the previous one"
        );
    }
    assert_eq!(pongs.last(), pings.last(), "the latest ping is answered");
}

/// Every message of `m` arrives in order, pings are answered (the latest at least) in order
/// before the echoed Close, and the session closes normally.
async fn a_default_session_gets_all_of(m: Mixed, client: Client) {
    let (url, server) = serve_mixed(m.wire.clone()).await;
    let mut s = client.connect(url).await.unwrap();
    let mut got = Vec::new();
    while let Some(msg) = s.recv().await {
        got.push(msg.unwrap());
        if got.len() % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(got.len(), m.messages.len());
    assert!(got == m.messages, "messages differ");
    assert_eq!(s.close_reason().await.code(), CloseCode::NORMAL);
    let sent = server.await.unwrap();
    let pongs: Vec<Vec<u8>> = sent
        .iter()
        .filter(|f| f.opcode == wsc::OpCode::Pong)
        .map(|f| f.payload.to_vec())
        .collect();
    answers_latest_pings(&pongs, &m.pings);
    assert_eq!(sent.last().unwrap().opcode, wsc::OpCode::Close);
}

/// A raw session shows every frame of `m` and answers nothing by itself: only our Close
/// goes out.
async fn a_raw_session_shows_all_of(m: Mixed) {
    let (url, server) = serve_mixed(m.wire.clone()).await;
    let mut s = Client::new().connect_raw(url).await.unwrap();
    let mut got = Vec::new();
    while let Some(f) = s.recv().await {
        let f = f.unwrap();
        let close = f.opcode == wsc::OpCode::Close;
        got.push(f);
        if close {
            s.send_frame(wsc::Frame::close(Some(&wsc::CloseReason::normal())))
                .await
                .unwrap();
        }
    }
    assert_eq!(got.len(), m.frames.len());
    assert!(got == m.frames, "frames differ");
    let sent = server.await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].opcode, wsc::OpCode::Close);
}

#[tokio::test]
async fn the_last_handle_dropped_closes_normally() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        s.write_all(switching(&key_of(&head), "").as_bytes())
            .await
            .unwrap();
        let mut d = wsc_proto::Decoder::new(wsc_proto::Role::Server, Default::default());
        let mut buf = bytes::BytesMut::new();
        while s.read_buf(&mut buf).await.unwrap() > 0 {
            while let Some(f) = d.decode(&mut buf).unwrap() {
                let _ = tx.send(f);
            }
        }
    });
    let s = Client::new().connect(url).await.unwrap();
    let sender = s.sender();
    drop(s);
    sender.send(Message::text("still here")).await.unwrap();
    let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&f.payload[..], b"still here");
    // Nothing else while the sender lives.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err()
    );
    let clone = sender.clone();
    drop(sender);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err()
    );
    drop(clone);
    let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.opcode, wsc::OpCode::Close);
    assert_eq!(
        f.close_reason().unwrap().map(|r| r.code()),
        Some(CloseCode::NORMAL)
    );
    server.abort();
}

/// Reads every frame a client writes until its Close (decoded as the RFC says a server
/// decodes them: `masked` frames unmasked by the decoder, unmasked ones with a client-role
/// decoder), answering the Close; sends `pings` once the first MiB has arrived. A pong
/// written inside a payload, a payload masked from the wrong key offset or a frame out of
/// order shows up as a decode error or a wrong payload.
async fn frames_until_close(s: &mut TcpStream, masked: bool, pings: &[Vec<u8>]) -> Vec<wsc::Frame> {
    use wsc_proto::{Decoder, Limits, OpCode, Role};
    let role = if masked { Role::Server } else { Role::Client };
    let mut d = Decoder::new(
        role,
        Limits {
            max_frame_size: 64 << 20,
            max_message_size: 64 << 20,
        },
    );
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    let mut read = 0;
    let mut pinged = false;
    loop {
        while let Some(f) = d.decode(&mut buf).expect("the client wrote a broken frame") {
            let close = f.opcode == OpCode::Close;
            frames.push(f);
            if close {
                s.write_all(b"\x88\x02\x03\xe8").await.unwrap();
                return frames;
            }
        }
        let n = s.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "EOF before the client's Close");
        read += n;
        if read >= 1 << 20 && !pinged {
            pinged = true;
            for p in pings {
                s.write_all(&[0x89, p.len() as u8]).await.unwrap();
                s.write_all(p).await.unwrap();
            }
        }
    }
}

/// Owned payloads of 16 KiB and more are queued without a copy and masked by the driver a
/// piece at a time as it writes; pongs the driver owes meanwhile must wait for the end of the
/// frame, the key must continue at each piece's offset, and everything stays in order.
async fn large_owned_sends(masking: bool) {
    // The pings arrive while the client is writing the 24 MiB message below (more than
    // socket buffers hold, so it is still mid-frame when it reads them).
    let pings: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'p', i]).collect();
    let (url, server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let s = Client::builder()
        .masking(masking)
        .build()
        .unwrap()
        .connect(url)
        .await
        .unwrap();
    let mut peer = server.await.unwrap();
    let pattern = |n: usize, seed: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    };
    let huge = pattern((24 << 20) + 3, 1); // odd size: pieces end at every key offset
    let sent: Vec<(wsc_proto::OpCode, bool, Vec<u8>)> = vec![
        (wsc_proto::OpCode::Text, true, b"first".to_vec()),
        (wsc_proto::OpCode::Binary, true, huge.clone()),
        (wsc_proto::OpCode::Binary, true, pattern(16 * 1024 - 1, 2)),
        (wsc_proto::OpCode::Binary, true, pattern(16 * 1024, 3)),
        (wsc_proto::OpCode::Binary, true, pattern(100 * 1024 + 1, 4)),
        (wsc_proto::OpCode::Binary, false, pattern((1 << 20) + 5, 5)),
        (wsc_proto::OpCode::Continuation, true, pattern(70_001, 6)),
        (wsc_proto::OpCode::Text, true, b"last".to_vec()),
    ];
    let client = tokio::spawn(async move {
        s.send("first").await.unwrap(); // small: copied into the queue
        s.send(huge).await.unwrap(); // Vec: queued as it is
        s.send(pattern(16 * 1024 - 1, 2)).await.unwrap();
        s.send(bytes::Bytes::from(pattern(16 * 1024, 3)))
            .await
            .unwrap();
        s.send_binary(&pattern(100 * 1024 + 1, 4)).await.unwrap(); // borrowed: copied
        let mut first = wsc::Frame::binary(pattern((1 << 20) + 5, 5));
        first.fin = false;
        s.send_frame(first).await.unwrap();
        s.send_frame(wsc::Frame::continuation(pattern(70_001, 6), true))
            .await
            .unwrap();
        s.send("last").await.unwrap();
        s.close(wsc::CloseReason::normal()).await.unwrap();
    });
    let frames = frames_until_close(&mut peer, masking, &pings).await;
    client.await.unwrap();
    let pongs: Vec<Vec<u8>> = frames
        .iter()
        .filter(|f| f.opcode == wsc_proto::OpCode::Pong)
        .map(|f| f.payload.to_vec())
        .collect();
    answers_latest_pings(&pongs, &pings);
    let data: Vec<&wsc::Frame> = frames.iter().filter(|f| !f.opcode.is_control()).collect();
    assert_eq!(data.len(), sent.len());
    for (i, (f, (op, fin, payload))) in data.iter().zip(&sent).enumerate() {
        assert_eq!((f.opcode, f.fin), (*op, *fin), "frame {i}");
        assert!(f.payload[..] == payload[..], "frame {i}: payload differs");
    }
    assert_eq!(frames.last().unwrap().opcode, wsc_proto::OpCode::Close);
}

#[tokio::test]
async fn large_owned_payloads_are_masked_in_pieces_with_pongs_between_frames() {
    large_owned_sends(true).await;
}

#[tokio::test]
async fn large_owned_payloads_unmasked_are_written_straight_from_the_senders_bytes() {
    large_owned_sends(false).await;
}

/// Senders on both runtime workers and on two plain threads share one session: every send
/// takes the outgoing queue's lock (a spin lock that backs off to yielding and sleeping), and
/// the large borrowed messages hold it while they are copied and masked, so the others meet
/// it held. Every frame must arrive whole, and each sender's frames in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_on_many_threads_share_the_queue_without_mixing_frames() {
    const PER_SENDER: u32 = 1500;
    let (url, server) = one_shot(|head| switching(&key_of(&head), "").into_bytes()).await;
    let s = Client::new().connect(url).await.unwrap();
    let mut peer = server.await.unwrap();
    // Sender `id`'s message `seq`: its id and number, then a pattern of a size that cycles
    // through small, medium and (every 97th) large.
    let payload = |id: u8, seq: u32| -> Vec<u8> {
        let len = match seq % 97 {
            0 => 300 * 1024 + usize::from(id),
            n if n % 3 == 0 => 1000 + n as usize,
            n => n as usize,
        };
        let mut p = vec![id];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend((0..len).map(|i| (i as u8).wrapping_mul(id).wrapping_add(seq as u8)));
        p
    };
    let mut tasks = Vec::new();
    for id in 0..3u8 {
        let s = s.sender();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_SENDER {
                s.send_binary(&payload(id, seq)).await.unwrap();
            }
        }));
    }
    let mut threads = Vec::new();
    for id in 3..5u8 {
        let s = s.sender();
        let rt = tokio::runtime::Handle::current();
        threads.push(std::thread::spawn(move || {
            for seq in 0..PER_SENDER {
                rt.block_on(s.send_binary(&payload(id, seq))).unwrap();
            }
        }));
    }
    let closer = tokio::spawn(async move {
        for t in tasks {
            t.await.unwrap();
        }
        for t in threads {
            tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
        }
        s.close(wsc::CloseReason::normal()).await.unwrap();
    });
    let frames = frames_until_close(&mut peer, true, &[]).await;
    closer.await.unwrap();
    let mut next = [0u32; 5];
    for f in frames
        .iter()
        .filter(|f| f.opcode == wsc_proto::OpCode::Binary)
    {
        let id = f.payload[0];
        let seq = u32::from_be_bytes(f.payload[1..5].try_into().unwrap());
        assert_eq!(seq, next[id as usize], "sender {id}: out of order");
        assert!(
            f.payload[..] == payload(id, seq)[..],
            "sender {id} message {seq} differs"
        );
        next[id as usize] += 1;
    }
    assert_eq!(next, [PER_SENDER; 5]);
}
