//! Streaming a message the server sends as one 64 MiB frame (the Python `websockets` server
//! does not fragment): it comes in bounded pieces as it arrives, with the default limits, in
//! bounded memory. Alone in its test binary so that peak RSS measures this test only.

mod common;

use std::time::{Duration, Instant};

use wsc::{Client, CloseReason};

const SIZE: usize = 64 << 20;

#[tokio::test]
async fn a_64_mib_frame_streams_in_bounded_pieces() {
    let peer = common::python_server(&[]);
    let client = Client::builder().stream_incoming(true).build().unwrap();
    let mut s = client
        .connect(peer.url(&format!("/big?n={SIZE}")))
        .await
        .unwrap();
    let rss_before = common::peak_rss_kib();
    let start = Instant::now();
    let mut msg = tokio::time::timeout(Duration::from_secs(30), s.recv_stream())
        .await
        .expect("the first piece arrives")
        .unwrap()
        .unwrap();
    assert!(!msg.is_text());
    let (mut got, mut pieces, mut largest) = (0usize, 0usize, 0usize);
    while let Some(chunk) = msg.next_chunk().await {
        let chunk = chunk.unwrap();
        assert!(
            chunk
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((got + i) % 251) as u8),
            "corrupt at {got}"
        );
        got += chunk.len();
        pieces += 1;
        largest = largest.max(chunk.len());
    }
    drop(msg);
    assert_eq!(got, SIZE);
    assert!(largest <= 64 * 1024, "a piece of {largest} bytes");
    assert!(pieces >= SIZE / (64 * 1024), "{pieces} pieces");
    let peak = common::peak_rss_kib();
    eprintln!(
        "{SIZE} bytes in {pieces} pieces (largest {largest}) in {:.2}s; peak RSS {peak} KiB (before {rss_before} KiB)",
        start.elapsed().as_secs_f64()
    );
    // The incoming queue's byte bound (1 MiB) and a read buffer: far below the frame.
    assert!(
        peak.saturating_sub(rss_before) < 16 * 1024,
        "peak RSS grew from {rss_before} to {peak} KiB"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    // The session goes on: the next message is an ordinary one.
    s.send(wsc::Message::text("after")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), s.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.as_text(), Some("after"));
    s.close(CloseReason::normal()).await.unwrap();
}
