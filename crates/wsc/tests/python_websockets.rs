//! Interop with an independent server: the Python `websockets` package.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wsc::{Client, CloseCode, CloseReason, Error, Frame, Message, OpCode, TimeoutKind};

fn server() -> common::Peer {
    common::python_server(&[])
}

#[tokio::test]
async fn text_and_binary_round_trip() {
    let peer = server();
    let mut s = Client::new().connect(peer.url("/")).await.unwrap();
    assert_eq!(s.call().status(), 101);
    s.send("héllo").await.unwrap();
    s.send(vec![0u8, 1, 2, 255]).await.unwrap();
    s.send_text("").await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap(), Message::text("héllo"));
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    assert_eq!(s.recv().await.unwrap().unwrap(), Message::text(""));
    let peer_reason = s
        .close(CloseReason::new(CloseCode::NORMAL, "done").unwrap())
        .await
        .unwrap();
    assert_eq!(peer_reason.unwrap().code(), CloseCode::NORMAL);
    assert_eq!(s.close_reason().await.code(), CloseCode::NORMAL);
    assert!(s.recv().await.is_none(), "a normal close ends the stream");
    assert!(matches!(s.send("late").await, Err(Error::Closed(_))));
}

#[tokio::test]
async fn sixteen_mib_message() {
    let peer = server();
    let mut s = Client::new().connect(peer.url("/")).await.unwrap();
    let big: Vec<u8> = (0..16 << 20).map(|i| (i % 253) as u8).collect();
    s.send(big.clone()).await.unwrap();
    let back = s.recv().await.unwrap().unwrap();
    assert_eq!(back.as_bytes(), &big[..]);
    s.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn fragmented_both_ways() {
    let peer = server();
    let mut s = Client::new().connect(peer.url("/fragments")).await.unwrap();
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::text("frag-one frag-two frag-three")
    );
    s.send_fragmented(Message::text("abcdefghij"), 3)
        .await
        .unwrap();
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::text("abcdefghij")
    );
    s.close(CloseReason::normal()).await.unwrap();

    // A raw session sees the fragments as they are on the wire.
    let mut raw = Client::new()
        .connect_raw(peer.url("/fragments"))
        .await
        .unwrap();
    let mut frames = Vec::new();
    loop {
        let f = raw.recv().await.unwrap().unwrap();
        let fin = f.fin;
        frames.push(f);
        if fin {
            break;
        }
    }
    // websockets sends each fragment, then an empty final continuation.
    assert!(frames.len() >= 3, "{frames:?}");
    assert_eq!((frames[0].opcode, frames[0].fin), (OpCode::Text, false));
    assert!(frames[1..].iter().all(|f| f.opcode == OpCode::Continuation));
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.payload.to_vec()).collect();
    assert_eq!(joined, b"frag-one frag-two frag-three");
    raw.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn ping_pong() {
    let peer = server();
    let mut raw = Client::new().connect_raw(peer.url("/")).await.unwrap();
    raw.ping(&b"are you there"[..]).await.unwrap();
    let f = raw.recv().await.unwrap().unwrap();
    assert_eq!(
        (f.opcode, &f.payload[..]),
        (OpCode::Pong, &b"are you there"[..])
    );
    raw.close(CloseReason::normal()).await.unwrap();

    // A default session's keepalive: pings every 50 ms, the server answers, nothing times out.
    let client = Client::builder()
        .ping_interval(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.send("still here").await.unwrap();
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::text("still here")
    );
    s.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn close_codes_both_ways() {
    let peer = server();
    // We close with an application code; the server echoes it.
    let s = Client::new().connect(peer.url("/")).await.unwrap();
    let echoed = s
        .close(CloseReason::new(4001, "bye").unwrap())
        .await
        .unwrap();
    assert_eq!(echoed.map(|r| r.code()), Some(CloseCode::from(4001)));
    assert_eq!(
        s.close_reason().await,
        CloseReason::new(4001, "bye").unwrap()
    );

    // The server closes with 4002 "server says so": recv ends, the reason is the server's.
    let mut s = Client::new().connect(peer.url("/")).await.unwrap();
    s.send("close:4002:server says so").await.unwrap();
    assert!(s.recv().await.is_none());
    assert_eq!(
        s.close_reason().await,
        CloseReason::new(4002, "server says so").unwrap()
    );
    assert!(
        matches!(s.send("x").await, Err(Error::Closed(Some(r))) if r.code() == CloseCode::from(4002))
    );
}

#[tokio::test]
async fn refused_handshake_keeps_status_headers_body() {
    let peer = server();
    match Client::new().connect(peer.url("/refuse")).await {
        Err(Error::HandshakeRefused {
            status,
            headers,
            body,
        }) => {
            assert_eq!(status, 403);
            assert!(headers.contains_key("content-type"));
            assert_eq!(&body[..], b"go away\n");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn ping_timeout_closes_with_1011() {
    let peer = server();
    let client = Client::builder()
        .ping_interval(Some(Duration::from_millis(100)))
        .ping_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/stall")).await.unwrap();
    let start = Instant::now();
    match s.recv().await {
        Some(Err(Error::Timeout(TimeoutKind::Ping))) => {}
        other => panic!("expected a ping timeout, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let r = s.close_reason().await;
    assert_eq!(
        (r.code(), r.reason()),
        (CloseCode::INTERNAL_ERROR, "Ping timeout")
    );
}

#[tokio::test]
async fn subprotocols_headers_and_query() {
    let peer = server();
    let s = Client::new()
        .request(peer.url("/"))
        .protocols(["v2.example", "chat"])
        .header("X-Trace", "abc")
        .query("room", "a b")
        .connect()
        .await
        .unwrap();
    assert_eq!(s.protocol(), Some("chat"));
    assert_eq!(s.call().request_headers()["x-trace"], "abc");
    assert_eq!(s.call().url().query(), Some("room=a+b"));
    assert_eq!(
        s.call().response_headers()["sec-websocket-protocol"],
        "chat"
    );
    s.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn scoped_form_closes_after_the_closure() {
    let peer = server();
    let client = Client::new();
    let got = client
        .websocket(peer.url("/"), async |s: &mut wsc::Session| {
            s.send("ping?").await?;
            let m = s.recv().await.unwrap()?;
            Ok::<_, Error>(m.as_text().unwrap().to_owned())
        })
        .await
        .unwrap();
    assert_eq!(got, "ping?");

    // An error from the closure closes with 1011 and is returned.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let r: Result<(), Error> = client
        .websocket(peer.url("/"), async |s: &mut wsc::Session| {
            let _ = tx.send(s.sender());
            Err(Error::InvalidConfig("the closure failed".into()))
        })
        .await;
    assert!(matches!(r, Err(Error::InvalidConfig(_))));
    let sender = rx.await.unwrap();
    let reason = sender.close_reason().await;
    assert_eq!(reason.code(), CloseCode::INTERNAL_ERROR);
    assert!(reason.reason().contains("the closure failed"));
}

#[tokio::test]
async fn split_halves_in_different_tasks() {
    let peer = server();
    let s = Client::new().connect(peer.url("/")).await.unwrap();
    let (tx, mut rx) = s.split();
    let writer = {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0..1000 {
                tx.send(format!("m{i}")).await.unwrap();
            }
            tx.flush().await.unwrap();
        })
    };
    for i in 0..1000 {
        assert_eq!(
            rx.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    writer.await.unwrap();
    tx.close(CloseReason::normal()).await.unwrap();
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn message_over_the_limit_closes_with_1009() {
    let peer = server();
    let client = Client::builder().max_message_size(1000).build().unwrap();
    let mut s = client.connect(peer.url("/big?n=5000")).await.unwrap();
    match s.recv().await {
        Some(Err(Error::MessageTooBig { max: 1000, .. })) => {}
        other => panic!("expected 1009, got {other:?}"),
    }
    assert_eq!(s.close_reason().await.code(), CloseCode::TOO_BIG);
    // The limit can change while the session runs.
    let mut s = client.connect(peer.url("/")).await.unwrap();
    s.set_max_message_size(10_000);
    assert_eq!(s.max_message_size(), 10_000);
    s.send(vec![7u8; 5000]).await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap().len(), 5000);
    s.set_max_message_size(1000);
    s.send(vec![7u8; 5000]).await.unwrap();
    assert!(matches!(
        s.recv().await,
        Some(Err(Error::MessageTooBig { .. }))
    ));
}

#[tokio::test]
async fn raw_session_sends_frames_as_given() {
    let peer = server();
    let mut raw = Client::new().connect_raw(peer.url("/")).await.unwrap();
    raw.send_frame(Frame::binary(vec![1u8, 2]).with_fin(false))
        .await
        .unwrap();
    raw.send_frame(Frame::continuation(vec![3u8], true))
        .await
        .unwrap();
    let f = raw.recv().await.unwrap().unwrap();
    assert_eq!(
        (f.opcode, &f.payload[..]),
        (OpCode::Binary, &[1u8, 2, 3][..])
    );
    // The server's Close reaches a raw session as a frame, and is not answered for us.
    raw.send("close:4003:raw").await.unwrap();
    let f = raw.recv().await.unwrap().unwrap();
    assert_eq!(f.opcode, OpCode::Close);
    assert_eq!(
        f.close_reason().unwrap().unwrap().code(),
        CloseCode::from(4003)
    );
    raw.send_frame(Frame::close(f.close_reason().unwrap().as_ref()))
        .await
        .unwrap();
    assert_eq!(raw.close_reason().await.code(), CloseCode::from(4003));
}

#[tokio::test]
async fn dropped_recv_and_send_futures_lose_nothing() {
    let peer = server();
    let mut s = Client::new().connect(peer.url("/")).await.unwrap();
    // recv futures dropped while waiting: the message that arrives later is still delivered.
    for _ in 0..5 {
        assert!(
            tokio::time::timeout(Duration::from_millis(10), s.recv())
                .await
                .is_err()
        );
    }
    s.send("after cancelled receives").await.unwrap();
    assert_eq!(
        s.recv().await.unwrap().unwrap(),
        Message::text("after cancelled receives")
    );
    // Many messages in flight, received through futures that are dropped and re-created.
    for i in 0..200 {
        s.send(format!("n{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        let fut = s.recv();
        tokio::pin!(fut);
        // Poll once; drop it if it is not ready at once.
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), &mut fut).await {
            got.push(m.unwrap().as_text().unwrap().to_owned());
        }
    }
    assert_eq!(got, (0..200).map(|i| format!("n{i}")).collect::<Vec<_>>());
    // A send future dropped after it completed its poll leaves the session usable.
    let fut = s.send_text("x");
    drop(fut);
    s.send_text("y").await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap(), Message::text("y"));
    s.close(CloseReason::normal()).await.unwrap();
}
