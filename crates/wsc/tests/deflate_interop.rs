//! permessage-deflate against real servers: Python `websockets` and Node `ws`, with and without
//! context takeover, text and binary, small and multi-megabyte messages.

mod common;

use wsc::{Client, CloseReason, DeflateConfig, Message};

fn json_like(n: usize) -> String {
    let mut s = String::with_capacity(n + 100);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            r#"{{"id":{i},"user":"user{}","score":{},"tags":["alpha","beta"],"active":{}}},"#,
            i % 97,
            (i * 7919) % 1000,
            i.is_multiple_of(2)
        ));
        i += 1;
    }
    s.truncate(n);
    s
}

fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x1234_5678_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn exercise(url: String, config: DeflateConfig, expect_no_takeover: bool) {
    let client = Client::builder()
        .deflate(config)
        .max_message_size(64 << 20)
        .build()
        .unwrap();
    let mut s = client.connect(&url).await.unwrap();
    let ext = s.call().extensions().join(",");
    assert!(
        ext.starts_with("permessage-deflate"),
        "not negotiated: {ext:?}"
    );
    assert_eq!(
        ext.contains("client_no_context_takeover") && ext.contains("server_no_context_takeover"),
        expect_no_takeover,
        "{ext}"
    );
    let big_text = json_like(3 << 20);
    let big_binary = noise(2 << 20);
    let msgs = vec![
        Message::text("hello"),
        Message::text("hello"),
        Message::text(""),
        Message::binary(vec![0u8; 1000]),
        Message::text(json_like(10_000)),
        Message::text(big_text),
        Message::binary(big_binary),
        Message::text("héllo wörld ✓"),
    ];
    for m in &msgs {
        s.send(m.clone()).await.unwrap();
    }
    // Fragmented and compressed, too.
    s.send_fragmented(Message::text(json_like(100_000)), 4096)
        .await
        .unwrap();
    for m in &msgs {
        let got = s.recv().await.unwrap().unwrap();
        assert_eq!(got.is_text(), m.is_text());
        assert!(
            got.as_bytes() == m.as_bytes(),
            "echo differs for a {}-byte message",
            m.len()
        );
    }
    assert_eq!(
        s.recv().await.unwrap().unwrap().as_text().unwrap(),
        json_like(100_000)
    );
    s.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn python_websockets_with_context_takeover() {
    let peer = common::python_server(&["--deflate"]);
    exercise(peer.url("/"), DeflateConfig::default(), false).await;
}

#[tokio::test]
async fn python_websockets_without_context_takeover() {
    let peer = common::python_server(&["--deflate", "--no-context-takeover"]);
    exercise(peer.url("/"), DeflateConfig::default(), true).await;
}

#[tokio::test]
async fn python_websockets_client_asks_for_no_takeover_and_small_windows() {
    let peer = common::python_server(&["--deflate"]);
    let cfg = DeflateConfig::default()
        .client_no_context_takeover(true)
        .server_no_context_takeover(true)
        .server_max_window_bits(Some(10))
        .client_max_window_bits(Some(11));
    let client = Client::builder().deflate(cfg).build().unwrap();
    let mut s = client.connect(peer.url("/")).await.unwrap();
    let ext = &s.call().extensions()[0];
    assert!(
        ext.contains("server_max_window_bits=10") && ext.contains("server_no_context_takeover"),
        "{ext}"
    );
    let text = json_like(500_000);
    s.send(text.as_str()).await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap().as_text().unwrap(), text);
    s.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn node_ws_with_context_takeover() {
    let peer = common::node_server(&[]);
    exercise(peer.url("/"), DeflateConfig::default(), false).await;
}

#[tokio::test]
async fn node_ws_without_context_takeover() {
    let peer = common::node_server(&["--no-context-takeover"]);
    exercise(peer.url("/"), DeflateConfig::default(), true).await;
}

#[tokio::test]
async fn node_ws_with_small_windows() {
    let peer = common::node_server(&["--window-bits", "9"]);
    let client = Client::builder()
        .deflate(DeflateConfig::default())
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/")).await.unwrap();
    let ext = &s.call().extensions()[0];
    assert!(
        ext.contains("client_max_window_bits=9") && ext.contains("server_max_window_bits=9"),
        "{ext}"
    );
    let text = json_like(1 << 20);
    s.send(text.as_str()).await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap().as_text().unwrap(), text);
    s.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test]
async fn compressed_bomb_from_a_real_server_closes_with_1009() {
    // The client allows 1 MiB; the server (echoing what we send, compressed) sends 8 MiB of zeros,
    // a few KiB on the wire.
    let peer = common::python_server(&["--deflate"]);
    let client = Client::builder()
        .deflate(DeflateConfig::default())
        .max_message_size(1 << 20)
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/")).await.unwrap();
    s.send(vec![0u8; 8 << 20]).await.unwrap();
    match s.recv().await {
        Some(Err(wsc::Error::MessageTooBig { max, .. })) => assert_eq!(max, 1 << 20),
        other => panic!("expected 1009, got {other:?}"),
    }
    assert_eq!(s.close_reason().await.code(), wsc::CloseCode::TOO_BIG);
}

/// Senders on both workers of a multi-threaded runtime compress at the same time as a stream
/// writer sends uncompressed pieces, into one session with context takeover: each message must
/// be compressed in the order it is queued (the server inflates them as one stream; a message
/// compressed before another but queued after it would corrupt every later one), and no
/// message may land inside the streamed one. Node `ws` echoes each; every echo must be intact,
/// and each sender's in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compressed_senders_and_a_stream_keep_the_deflate_stream_in_order() {
    const SENDERS: u8 = 4;
    const PER_SENDER: u32 = 60;
    let peer = common::node_server(&[]);
    let client = Client::builder()
        .deflate(DeflateConfig::default())
        .max_message_size(64 << 20)
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/")).await.unwrap();
    let text = |id: u8, seq: u32| -> String {
        // Sizes from a few bytes to 200 KB, so that some compress for a while.
        let n = [10, 3_000, 40_000, 200_000][(seq as usize + id as usize) % 4];
        format!("{id}:{seq}:{}", json_like(n))
    };
    let mut tasks = Vec::new();
    for id in 0..SENDERS {
        let tx = s.sender().clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_SENDER {
                tx.send(text(id, seq)).await.unwrap();
            }
        }));
    }
    // Streams start again and again, from a thread of their own (runtime workers can all be
    // busy compressing or waiting for the chain), so that some start while a message is
    // being compressed.
    const STREAMS: usize = 150;
    let streamed = noise(10_000);
    let tx = s.sender().clone();
    let piece_source = streamed.clone();
    let rt = tokio::runtime::Handle::current();
    let streamer = std::thread::spawn(move || {
        rt.block_on(async {
            for _ in 0..STREAMS {
                let mut w = tx.message_writer(wsc::OpCode::Binary).await.unwrap();
                for piece in piece_source.chunks(5_000) {
                    w.write(piece).await.unwrap();
                }
                w.finish().await.unwrap();
            }
        })
    });
    let mut next = [0u32; SENDERS as usize];
    let mut streams = 0;
    for _ in 0..(u32::from(SENDERS) * PER_SENDER + STREAMS as u32) {
        let m = s.recv().await.unwrap().unwrap();
        if m.is_text() {
            let t = m.as_text().unwrap();
            let mut parts = t.splitn(3, ':');
            let id: u8 = parts.next().unwrap().parse().unwrap();
            let seq: u32 = parts.next().unwrap().parse().unwrap();
            assert_eq!(seq, next[id as usize], "sender {id}: out of order");
            assert!(t == text(id, seq), "sender {id} message {seq} differs");
            next[id as usize] += 1;
        } else {
            assert!(m.as_bytes() == &streamed[..], "a streamed message differs");
            streams += 1;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::task::spawn_blocking(move || streamer.join().unwrap())
        .await
        .unwrap();
    assert_eq!(streams, STREAMS);
    assert_eq!(next, [PER_SENDER; SENDERS as usize]);
    s.close(CloseReason::normal()).await.unwrap();
}

/// Process CPU time (user + system) from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (from 0);
    // Linux counts them in USER_HZ, which is 100 on every architecture it supports.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// Eight tasks on two runtime workers send 1 MiB compressible messages through one session.
/// A task waiting for the compressor must wait as a task, not by holding its worker: a timer
/// task on the same runtime keeps ticking meanwhile (its longest gap stays a small part of
/// the run), every sender gets through, and the process burns well under both workers' time
/// (no thread spins on a lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressing_senders_never_hold_a_worker_while_they_wait() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 4;
    let peer = common::python_server(&["--deflate"]);
    let client = Client::builder()
        .deflate(DeflateConfig::default())
        .max_message_size(64 << 20)
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/")).await.unwrap();
    let body = std::sync::Arc::new(json_like(1 << 20));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut longest = std::time::Duration::ZERO;
            let mut last = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                longest = longest.max(last.elapsed());
                last = std::time::Instant::now();
            }
            longest
        })
    };
    let wall = std::time::Instant::now();
    let cpu = cpu_seconds();
    let mut tasks = Vec::new();
    for id in 0..TASKS {
        let tx = s.sender().clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_TASK {
                tx.send(format!("{id}:{seq}:{body}")).await.unwrap();
            }
        }));
    }
    let received = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut n = [0usize; TASKS];
        for _ in 0..TASKS * PER_TASK {
            let m = s.recv().await.unwrap().unwrap();
            let t = m.as_text().unwrap();
            let id: usize = t.split(':').next().unwrap().parse().unwrap();
            assert!(t.len() == body.len() + 4, "task {id}'s echo differs");
            n[id] += 1;
        }
        n
    })
    .await
    .expect("every sender's messages echoed within 120 s");
    for t in tasks {
        t.await.unwrap();
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest = ticker.await.unwrap().as_secs_f64();
    assert_eq!(received, [PER_TASK; TASKS], "every task progressed");
    assert!(
        longest < wall / 3.0,
        "a worker was held: the timer task waited {longest:.3} s in a {wall:.3} s run"
    );
    assert!(
        cpu < 1.8 * wall,
        "{cpu:.2} s of CPU in {wall:.2} s: threads spin rather than park"
    );
    s.close(CloseReason::normal()).await.unwrap();
}
