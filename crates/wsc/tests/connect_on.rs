//! The handshake over a stream the caller opened: an in-memory duplex with wsc's server role
//! on the other end, for default and raw sessions, with the client's limits and call context.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsc::server::{AcceptConfig, accept};
use wsc::{Client, CloseCode, CloseReason, Error, Message};

fn echo_server(io: tokio::io::DuplexStream) -> tokio::task::JoinHandle<Option<u16>> {
    tokio::spawn(async move {
        let cfg = AcceptConfig {
            protocols: vec!["chat".into()],
            ..Default::default()
        };
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
