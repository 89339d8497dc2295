//! Each client library driven the way its README shows, for each case. The plain `TcpStream`
//! moves the same bytes and is the ceiling.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsc_proto::{OpCode, encode_frame, header_len};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lib {
    Tcp,
    Wsc,
    WscRaw,
    Tungstenite,
    TokioWebsockets,
    Fastwebsockets,
}

impl Lib {
    pub const ALL: [Lib; 6] = [
        Lib::Tcp,
        Lib::Wsc,
        Lib::WscRaw,
        Lib::Tungstenite,
        Lib::TokioWebsockets,
        Lib::Fastwebsockets,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Lib::Tcp => "tcp (ceiling)",
            Lib::Wsc => "wsc",
            Lib::WscRaw => "wsc raw",
            Lib::Tungstenite => "tokio-tungstenite",
            Lib::TokioWebsockets => "tokio-websockets",
            Lib::Fastwebsockets => "fastwebsockets",
        }
    }
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Lib::Tungstenite | Lib::TokioWebsockets | Lib::Fastwebsockets
        )
    }
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/")
}

fn wsc_client() -> wsc::Client {
    wsc::Client::builder()
        .max_frame_size(64 << 20)
        .max_message_size(64 << 20)
        .build()
        .unwrap()
}

/// A plain TCP stream that did the upgrade by hand (for the ceiling and fastwebsockets).
async fn tcp_upgraded(port: u16) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let _ = buf.split_to(end + 4);
            return (s, buf);
        }
    }
}

async fn fws(port: u16) -> fastwebsockets::WebSocket<TcpStream> {
    // fastwebsockets takes a stream positioned right after the 101: read the response a byte at
    // a time so nothing behind it is consumed (hyper's upgrade hands over the same way).
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let mut ws = fastwebsockets::WebSocket::after_handshake(s, fastwebsockets::Role::Client);
    ws.set_max_message_size(64 << 20);
    ws
}

async fn tws(
    port: u16,
) -> tokio_websockets::WebSocketStream<tokio_websockets::MaybeTlsStream<TcpStream>> {
    let uri = http::Uri::try_from(url(port)).unwrap();
    let limits = tokio_websockets::Limits::default().max_payload_len(Some(64 << 20));
    tokio_websockets::ClientBuilder::from_uri(uri)
        .limits(limits)
        .connect()
        .await
        .unwrap()
        .0
}

async fn tung(
    port: u16,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    tokio_tungstenite::connect_async(url(port)).await.unwrap().0
}

/// Receives `count` data messages of `size` from a blast server; returns the count seen.
pub async fn recv(lib: Lib, port: u16, size: usize, count: u64) -> u64 {
    let mut n = 0u64;
    match lib {
        Lib::Tcp => {
            let (mut s, rest) = tcp_upgraded(port).await;
            let total = (header_len(size, false) + size) as u64 * count + 4;
            let mut got = rest.len() as u64;
            let mut b = vec![0u8; 256 * 1024];
            while got < total {
                let r = s.read(&mut b).await.unwrap();
                assert!(r > 0);
                got += r as u64;
            }
            n = count;
        }
        Lib::Wsc => {
            let mut s = wsc_client().connect(url(port)).await.unwrap();
            while let Some(Ok(_)) = s.recv().await {
                n += 1;
            }
        }
        Lib::WscRaw => {
            let mut s = wsc_client().connect_raw(url(port)).await.unwrap();
            while let Some(Ok(f)) = s.recv().await {
                if f.opcode == OpCode::Close {
                    let _ = s.send_frame(wsc::Frame::close(None)).await;
                    break;
                }
                n += 1;
            }
        }
        Lib::Tungstenite => {
            let mut ws = tung(port).await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() {
                    n += 1;
                }
            }
        }
        Lib::TokioWebsockets => {
            let mut ws = tws(port).await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() {
                    n += 1;
                }
            }
        }
        Lib::Fastwebsockets => {
            let mut ws = fws(port).await;
            while let Ok(f) = ws.read_frame().await {
                match f.opcode {
                    fastwebsockets::OpCode::Close => break,
                    _ => n += 1,
                }
            }
        }
    }
    n
}

/// `count` wsc sends as its documentation recommends for speed: small payloads borrowed
/// (copied and masked into the queue at once), payloads of 16 KiB and more handed over (queued
/// uncopied and masked as they are written).
async fn wsc_send(s: &wsc::Sender, payload: &Bytes, count: u64) {
    if payload.len() < 16 * 1024 {
        for _ in 0..count {
            s.send_binary(payload).await.unwrap();
        }
    } else {
        for _ in 0..count {
            s.send(payload.clone()).await.unwrap();
        }
    }
}

/// Sends `count` binary messages of `size` to a sink server, then waits for its Close.
pub async fn send(lib: Lib, port: u16, size: usize, count: u64) -> u64 {
    let payload = Bytes::from(vec![0x5a_u8; size]);
    match lib {
        Lib::Tcp => {
            let (mut s, _) = tcp_upgraded(port).await;
            let per = header_len(size, true) + size;
            // Writes of up to 1 MiB, as large as wsc's own (on this project's VM a 256 KiB
            // write cost markedly more system time per byte than a 1 MiB one).
            let per_block = ((1 << 20) / per).max(1);
            let mut block = BytesMut::with_capacity(per * per_block);
            for _ in 0..per_block {
                encode_frame(
                    &mut block,
                    OpCode::Binary,
                    true,
                    0,
                    &payload,
                    Some([1, 2, 3, 4]),
                );
            }
            let mut left = count;
            while left > 0 {
                let k = left.min(per_block as u64) as usize;
                s.write_all(&block[..k * per]).await.unwrap();
                left -= k as u64;
            }
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
        }
        Lib::Wsc | Lib::WscRaw => {
            let client = wsc_client();
            if lib == Lib::Wsc {
                let mut s = client.connect(url(port)).await.unwrap();
                wsc_send(&s.sender(), &payload, count).await;
                s.flush().await.unwrap();
                while s.recv().await.is_some() {}
            } else {
                let mut s = client.connect_raw(url(port)).await.unwrap();
                wsc_send(&s.sender(), &payload, count).await;
                s.flush().await.unwrap();
                while let Some(Ok(f)) = s.recv().await {
                    if f.opcode == OpCode::Close {
                        let _ = s.send_frame(wsc::Frame::close(None)).await;
                        break;
                    }
                }
            }
        }
        Lib::Tungstenite => {
            let mut ws = tung(port).await;
            for _ in 0..count {
                ws.feed(tokio_tungstenite::tungstenite::Message::Binary(
                    payload.clone(),
                ))
                .await
                .unwrap();
            }
            ws.flush().await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        }
        Lib::TokioWebsockets => {
            let mut ws = tws(port).await;
            for _ in 0..count {
                ws.feed(tokio_websockets::Message::binary(payload.clone()))
                    .await
                    .unwrap();
            }
            ws.flush().await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        }
        Lib::Fastwebsockets => {
            let mut ws = fws(port).await;
            for _ in 0..count {
                ws.write_frame(fastwebsockets::Frame::binary(
                    fastwebsockets::Payload::Borrowed(&payload),
                ))
                .await
                .unwrap();
            }
            while let Ok(f) = ws.read_frame().await {
                if f.opcode == fastwebsockets::OpCode::Close {
                    break;
                }
            }
        }
    }
    count
}

/// Round trips made after connecting and before timing starts, so that every client is timed
/// warm (its first round trips fault pages in and fill caches).
const RTT_WARMUP: u64 = 200;

/// `count` round trips of a 32-byte message through an echo server, after `RTT_WARMUP`
/// untimed ones; nanoseconds each.
pub async fn rtt(lib: Lib, port: u16, count: u64) -> Vec<u64> {
    let payload = Bytes::from(vec![0x5a_u8; 32]);
    let total = count + RTT_WARMUP;
    let mut out = Vec::with_capacity(total as usize);
    match lib {
        Lib::Tcp => {
            let (mut s, _) = tcp_upgraded(port).await;
            let mut frame = BytesMut::new();
            encode_frame(
                &mut frame,
                OpCode::Binary,
                true,
                0,
                &payload,
                Some([1, 2, 3, 4]),
            );
            let mut back = [0u8; 34];
            for _ in 0..total {
                let t = Instant::now();
                s.write_all(&frame).await.unwrap();
                s.read_exact(&mut back).await.unwrap();
                out.push(t.elapsed().as_nanos() as u64);
            }
        }
        Lib::Wsc => {
            let mut s = wsc_client().connect(url(port)).await.unwrap();
            for _ in 0..total {
                let t = Instant::now();
                s.send_binary(&payload).await.unwrap();
                s.recv().await.unwrap().unwrap();
                out.push(t.elapsed().as_nanos() as u64);
            }
            let _ = s.close(wsc::CloseReason::normal()).await;
        }
        Lib::WscRaw => {
            let mut s = wsc_client().connect_raw(url(port)).await.unwrap();
            for _ in 0..total {
                let t = Instant::now();
                s.send_binary(&payload).await.unwrap();
                s.recv().await.unwrap().unwrap();
                out.push(t.elapsed().as_nanos() as u64);
            }
            let _ = s.close(wsc::CloseReason::normal()).await;
        }
        Lib::Tungstenite => {
            let mut ws = tung(port).await;
            for _ in 0..total {
                let t = Instant::now();
                ws.send(tokio_tungstenite::tungstenite::Message::Binary(
                    payload.clone(),
                ))
                .await
                .unwrap();
                ws.next().await.unwrap().unwrap();
                out.push(t.elapsed().as_nanos() as u64);
            }
            let _ = ws.close(None).await;
        }
        Lib::TokioWebsockets => {
            let mut ws = tws(port).await;
            for _ in 0..total {
                let t = Instant::now();
                ws.send(tokio_websockets::Message::binary(payload.clone()))
                    .await
                    .unwrap();
                ws.next().await.unwrap().unwrap();
                out.push(t.elapsed().as_nanos() as u64);
            }
            let _ = ws.close().await;
        }
        Lib::Fastwebsockets => {
            let mut ws = fws(port).await;
            for _ in 0..total {
                let t = Instant::now();
                ws.write_frame(fastwebsockets::Frame::binary(
                    fastwebsockets::Payload::Borrowed(&payload),
                ))
                .await
                .unwrap();
                ws.read_frame().await.unwrap();
                out.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    out.drain(..RTT_WARMUP as usize);
    out
}

pub fn rss_kib() -> u64 {
    field_kib("VmRSS:")
}

pub fn peak_rss_kib() -> u64 {
    field_kib("VmHWM:")
}

fn field_kib(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Opens `n` connections to an idle server and returns the bytes of RSS each costs; with
/// `parked`, a task per connection waits in receive.
pub async fn idle(lib: Lib, port: u16, n: usize, parked: bool) -> f64 {
    let client = wsc_client();
    let before = rss_kib();
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(n);
    let mut tasks = Vec::new();
    for _ in 0..n {
        match lib {
            Lib::Tcp => {
                let (mut s, _) = tcp_upgraded(port).await;
                if parked {
                    tasks.push(tokio::spawn(async move {
                        let mut b = [0u8; 1];
                        let _ = s.read(&mut b).await;
                    }));
                } else {
                    keep.push(Box::new(s));
                }
            }
            Lib::Wsc | Lib::WscRaw => {
                if lib == Lib::Wsc {
                    let mut s = client.connect(url(port)).await.unwrap();
                    if parked {
                        tasks.push(tokio::spawn(async move {
                            let _ = s.recv().await;
                        }));
                    } else {
                        keep.push(Box::new(s));
                    }
                } else {
                    let mut s = client.connect_raw(url(port)).await.unwrap();
                    if parked {
                        tasks.push(tokio::spawn(async move {
                            let _ = s.recv().await;
                        }));
                    } else {
                        keep.push(Box::new(s));
                    }
                }
            }
            Lib::Tungstenite => {
                let mut ws = tung(port).await;
                if parked {
                    tasks.push(tokio::spawn(async move {
                        let _ = ws.next().await;
                    }));
                } else {
                    keep.push(Box::new(ws));
                }
            }
            Lib::TokioWebsockets => {
                let mut ws = tws(port).await;
                if parked {
                    tasks.push(tokio::spawn(async move {
                        let _ = ws.next().await;
                    }));
                } else {
                    keep.push(Box::new(ws));
                }
            }
            Lib::Fastwebsockets => {
                let mut ws = fws(port).await;
                if parked {
                    tasks.push(tokio::spawn(async move {
                        let _ = ws.read_frame().await;
                    }));
                } else {
                    keep.push(Box::new(ws));
                }
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = rss_kib();
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    for t in tasks {
        t.abort();
    }
    drop(keep);
    per
}

/// JSON-like text, as a chat or market-data feed sends.
pub fn json_like(n: usize) -> String {
    let mut s = String::with_capacity(n + 128);
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

/// `count` round trips of a compressed JSON-like text message through a permessage-deflate
/// echo server (Node's `ws`); the compared libraries are those with permessage-deflate.
pub async fn deflate_echo(lib: &str, port: u16, size: usize, count: u64) -> u64 {
    let text = json_like(size);
    match lib {
        "wsc" => {
            let client = wsc::Client::builder()
                .deflate(wsc::DeflateConfig::default())
                .max_message_size(64 << 20)
                .build()
                .unwrap();
            let mut s = client.connect(url(port)).await.unwrap();
            assert!(!s.call().extensions().is_empty(), "deflate not negotiated");
            for _ in 0..count {
                s.send_text(&text).await.unwrap();
                assert_eq!(s.recv().await.unwrap().unwrap().len(), size);
            }
            let _ = s.close(wsc::CloseReason::normal()).await;
        }
        "yawc" => {
            let opts =
                yawc::Options::default().with_compression_level(yawc::CompressionLevel::default());
            let mut ws = yawc::WebSocket::connect(url(port).parse().unwrap())
                .with_options(opts)
                .await
                .unwrap();
            let payload = Bytes::from(text.into_bytes());
            for _ in 0..count {
                ws.send(yawc::frame::FrameView::text(payload.clone()))
                    .await
                    .unwrap();
                loop {
                    let f = ws.next().await.unwrap();
                    if f.opcode == yawc::frame::OpCode::Text {
                        assert_eq!(f.payload.len(), size);
                        break;
                    }
                }
            }
        }
        other => panic!("no deflate client {other}"),
    }
    count
}

/// Eight tasks sending 16 B messages through one session's senders on a multi-thread runtime
/// while a ninth sends 1 MiB messages: the outgoing queue's lock under contention. Returns the
/// seconds taken and the slowest single 16 B send in microseconds (a worker parked behind the
/// lock would show there).
pub fn contended(port: u16, small: u64, large: u64) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = wsc_client().connect(url(port)).await.unwrap();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let tx = s.sender();
            tasks.push(tokio::spawn(async move {
                let mut worst = std::time::Duration::ZERO;
                for _ in 0..small {
                    let t = Instant::now();
                    tx.send_binary(&[0x5a; 16]).await.unwrap();
                    worst = worst.max(t.elapsed());
                }
                worst
            }));
        }
        let tx = s.sender();
        let big = Bytes::from(vec![0xa5u8; 1 << 20]);
        tasks.push(tokio::spawn(async move {
            for _ in 0..large {
                tx.send(big.clone()).await.unwrap();
            }
            std::time::Duration::ZERO
        }));
        let mut worst = std::time::Duration::ZERO;
        for task in tasks {
            worst = worst.max(task.await.unwrap());
        }
        s.close(wsc::CloseReason::normal()).await.unwrap();
        (t.elapsed().as_secs_f64(), worst.as_secs_f64() * 1e6)
    })
}
