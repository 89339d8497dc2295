//! Streaming a message far larger than any buffer: 1 GiB through the Python `websockets`
//! server, which echoes it fragment by fragment. Alone in its test binary so that peak RSS
//! measures this test only. `WSC_STREAM_BYTES` changes the size.

mod common;

use std::time::Instant;

use bytes::Bytes;
use wsc::{Client, CloseReason, OpCode};

const CHUNK: usize = 1 << 20;

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_streamed_echo_in_bounded_memory() {
    let total: u64 = std::env::var("WSC_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let peer = common::python_server(&[]);
    let client = Client::builder().stream_incoming(true).build().unwrap();
    let s = client.connect(peer.url("/stream")).await.unwrap();
    let (tx, mut rx) = s.split();
    let rss_before = common::peak_rss_kib();
    let start = Instant::now();

    let sender = tokio::spawn({
        let tx = tx.clone();
        async move {
            let chunks =
                futures_util::stream::iter((0..total.div_ceil(CHUNK as u64)).map(move |i| {
                    let off = i * CHUNK as u64;
                    let len = (total - off).min(CHUNK as u64) as usize;
                    Ok::<_, std::io::Error>(Bytes::from(pattern(off, len)))
                }));
            tx.send_stream(OpCode::Binary, chunks).await.unwrap()
        }
    });

    let mut msg = rx.recv_stream().await.unwrap().unwrap();
    assert!(!msg.is_text());
    let mut got = 0u64;
    while let Some(chunk) = msg.next_chunk().await {
        let chunk = chunk.unwrap();
        assert_eq!(
            &chunk[..],
            &pattern(got, chunk.len())[..],
            "corrupt at {got}"
        );
        got += chunk.len() as u64;
    }
    drop(msg);
    assert_eq!(sender.await.unwrap(), total);
    assert_eq!(got, total);
    let secs = start.elapsed().as_secs_f64();
    let peak = common::peak_rss_kib();
    eprintln!(
        "streamed {total} bytes each way in {secs:.1}s ({:.0} MiB/s); peak RSS {peak} KiB (before: {rss_before} KiB)",
        total as f64 / secs / 1048576.0
    );
    // A few frames of 1 MiB in flight, plus the test binary: far below the message size.
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
    tx.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn text_stream_is_utf8_checked_across_chunks_and_recv_reassembles() {
    let peer = common::python_server(&[]);
    let client = Client::builder()
        .stream_incoming(true)
        .max_message_size(1 << 20)
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/stream")).await.unwrap();
    // "é" split across two chunks is fine.
    let e = "é".as_bytes();
    let chunks = vec![
        Ok::<_, std::io::Error>(vec![b'a', e[0]]),
        Ok(vec![e[1], b'b']),
    ];
    s.send_stream(OpCode::Text, futures_util::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap().as_text(), Some("aéb"));
    // Invalid UTF-8 is refused before it reaches the wire.
    let bad = vec![Ok::<_, std::io::Error>(vec![0xffu8])];
    assert!(
        s.send_stream(OpCode::Text, futures_util::stream::iter(bad))
            .await
            .is_err()
    );
    // A reader works too, and recv() reassembles within max_message_size.
    let data = pattern(0, 300_000);
    s.send_reader(OpCode::Binary, &data[..], 64 * 1024)
        .await
        .unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap().as_bytes(), &data[..]);
    s.close(CloseReason::normal()).await.unwrap();
}
