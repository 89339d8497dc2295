//! The handshake over a stream the caller opened: an in-memory duplex with wsc's server role
//! on the other end, for default and raw sessions, with the client's limits and call context.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsc::server::{AcceptConfig, accept};
use wsc::{Client, CloseCode, CloseReason, Error, Message};

fn echo_server(io: tokio::io::DuplexStream) -> tokio::task::JoinHandle<Option<u16>> {
    tokio::spawn(async move {
        let cfg = AcceptConfig::default().protocols(["chat"]);
        let mut s = accept(io, &cfg).await.unwrap();
        assert_eq!(s.call().url().path(), "/room");
        while let Some(Ok(m)) = s.recv().await {
            s.send(m).await.unwrap();
        }
        s.try_close_reason().map(|r| r.code().as_u16())
    })
}

#[tokio::test]
async fn a_default_session_over_a_duplex() {
    let (ours, theirs) = tokio::io::duplex(16 * 1024);
    let server = echo_server(theirs);
    let client = Client::builder().max_message_size(1 << 16).build().unwrap();
    let mut s = client
        .request("ws://in-memory/room")
        .protocol("chat")
        .connect_on(ours)
        .await
        .unwrap();
    assert_eq!(s.protocol(), Some("chat"));
    assert_eq!(s.call().status(), 101);
    s.send("over a duplex").await.unwrap();
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::text("over a duplex")
    );
    // The client's limit applies: a message over it comes back as an error, not a session.
    s.send(Message::binary(vec![0u8; 1 << 17])).await.unwrap();
    let r = s.recv().await;
    assert!(matches!(r, Some(Err(Error::MessageTooBig { .. }))), "{r:?}");
    assert_eq!(server.await.unwrap(), Some(1009));
}

#[tokio::test]
async fn a_raw_session_over_a_duplex() {
    let (ours, theirs) = tokio::io::duplex(16 * 1024);
    let server = echo_server(theirs);
    let mut s = Client::new()
        .request("ws://in-memory/room")
        .connect_raw_on(ours)
        .await
        .unwrap();
    // A raw session and its receiver are named as users name them.
    assert!(format!("{s:?}").starts_with("RawSession {"), "{s:?}");
    assert_eq!(format!("{:?}", s.receiver()), "RawReceiver");
    s.send_frame(wsc::Frame::text("raw")).await.unwrap();
    let f = s.recv().await.unwrap().unwrap();
    assert_eq!(&f.payload[..], b"raw");
    s.close(CloseReason::normal()).await.unwrap();
    assert_eq!(server.await.unwrap(), Some(CloseCode::NORMAL.as_u16()));
}

#[tokio::test]
async fn a_redirect_on_a_callers_stream_is_an_error() {
    let (ours, mut theirs) = tokio::io::duplex(16 * 1024);
    tokio::spawn(async move {
        let mut b = [0u8; 4096];
        let _ = theirs.read(&mut b).await;
        let _ = theirs
            .write_all(
                b"HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let r = Client::new()
        .request("ws://in-memory/")
        .connect_on(ours)
        .await;
    assert!(matches!(r, Err(Error::Redirect(_))), "{r:?}");
}

#[tokio::test]
async fn a_silent_stream_times_out_in_the_handshake() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let t = std::time::Instant::now();
    let r = Client::new()
        .request("ws://in-memory/")
        .timeout(Duration::from_millis(300))
        .connect_on(ours)
        .await;
    assert!(
        matches!(r, Err(Error::Timeout(wsc::TimeoutKind::Handshake))),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// `send_stream` says what went wrong: the caller's stream failing is `Error::Source` with
/// its error as the cause, bad streamed text is `Error::InvalidUtf8`.
#[tokio::test]
async fn send_stream_errors_say_what_failed() {
    let (ours, theirs) = tokio::io::duplex(16 * 1024);
    let _server = echo_server(theirs);
    let s = Client::new()
        .request("ws://in-memory/room")
        .connect_on(ours)
        .await
        .unwrap();
    let bad_text = futures_util::stream::iter([Ok::<_, std::io::Error>(vec![0xffu8, 0xfe])]);
    let r = s.send_stream(wsc::OpCode::Text, bad_text).await;
    assert!(matches!(r, Err(Error::InvalidUtf8)), "{r:?}");

    let (ours, theirs) = tokio::io::duplex(16 * 1024);
    let _server = echo_server(theirs);
    let s = Client::new()
        .request("ws://in-memory/room")
        .connect_on(ours)
        .await
        .unwrap();
    let failing = futures_util::stream::iter([
        Ok(b"part".to_vec()),
        Err(std::io::Error::other("disk on fire")),
    ]);
    let r = s.send_stream(wsc::OpCode::Binary, failing).await;
    match r {
        Err(e @ Error::Source(_)) => {
            let cause = std::error::Error::source(&e).unwrap().to_string();
            assert_eq!(cause, "disk on fire");
        }
        other => panic!("{other:?}"),
    }
}

/// A stream that hands over at most one byte per read: a peer trickling its bytes.
struct OneByte<S>(S);

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for OneByte<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if buf.remaining() == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        let mut one = [0u8; 1];
        let mut small = tokio::io::ReadBuf::new(&mut one);
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, &mut small);
        buf.put_slice(small.filled());
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for OneByte<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Headers that bring a head near its 64 KiB limit: 100 lines of 600 bytes.
fn padding() -> Vec<(String, String)> {
    (0..100)
        .map(|i| (format!("x-pad-{i}"), "p".repeat(600)))
        .collect()
}

/// A head of nearly 64 KiB read a byte at a time, by the client (the 101) and by the server
/// role (the request): both complete, with every header, well inside the handshake's time.
/// Parsing the whole head again after every read made this quadratic (about 60,000 parses of
/// up to 60 KiB each).
#[tokio::test]
async fn a_large_head_read_a_byte_at_a_time_completes() {
    let t = std::time::Instant::now();
    // The client reads a trickled 101.
    let (ours, mut theirs) = tokio::io::duplex(128 * 1024);
    let server = tokio::spawn(async move {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(theirs.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("sec-websocket-key: ")
                    .map(|_| l[19..].to_owned())
            })
            .expect("a key")
            .trim()
            .to_owned();
        let mut reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            wsc_proto::handshake::accept_key(&key)
        );
        for (n, v) in padding() {
            reply.push_str(&format!("{n}: {v}\r\n"));
        }
        reply.push_str("\r\n");
        theirs.write_all(reply.as_bytes()).await.unwrap();
        theirs
    });
    let s = Client::new()
        .request("ws://in-memory/room")
        .connect_raw_on(OneByte(ours))
        .await
        .unwrap();
    assert_eq!(s.call().response_headers().len(), 3 + 100);
    drop(server.await.unwrap());

    // The server role reads a trickled request.
    let (ours, theirs) = tokio::io::duplex(128 * 1024);
    let server = tokio::spawn(async move {
        let s = accept(OneByte(theirs), &AcceptConfig::default())
            .await
            .unwrap();
        s.call().request_headers().len()
    });
    let mut req = Client::new().request("ws://in-memory/room");
    for (n, v) in padding() {
        req = req.header(&n, &v);
    }
    let _s = req.connect_raw_on(ours).await.unwrap();
    assert!(server.await.unwrap() >= 100);
    eprintln!("both handshakes: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
