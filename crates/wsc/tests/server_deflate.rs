//! permessage-deflate in the server role (`AcceptConfig::deflate`): a real client (Python
//! `websockets`) offers it with various parameters, wsc's server answers and echoes, and the
//! client checks every echo and reports what was negotiated; wsc's own client against wsc's
//! server; a compressed bomb sent to the server is refused at its message limit.

mod common;

use std::time::Duration;

use tokio::net::TcpListener;
use wsc::server::{AcceptConfig, accept};
use wsc::{Client, CloseCode, CloseReason, DeflateConfig, Message};

/// An echo server accepting connections with `config` until the test ends; returns its URL.
/// Each session's negotiated extensions are sent on `seen`.
async fn echo_server(
    config: AcceptConfig,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (config, tx) = (config.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut session) = accept(s, &config).await else {
                    return;
                };
                let _ = tx.send(session.call().extensions().to_vec());
                while let Some(Ok(m)) = session.recv().await {
                    if session.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, seen)
}

/// A Python `websockets` client that offers permessage-deflate with the given keyword
/// arguments of `ClientPerMessageDeflateFactory` (or none, for `websockets`' default offer),
/// sends text and binary messages (small, empty, repeated, 3 MiB of JSON, 2 MiB of noise, and
/// one fragmented) and checks each echo. It prints the response's extension header.
const PY_CLIENT: &str = r#"
import json, os, random, signal, sys
from websockets.sync.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
signal.alarm(60)
url, kwargs = sys.argv[1], json.loads(sys.argv[2])
exts = [ClientPerMessageDeflateFactory(**kwargs)] if kwargs is not None else None
opts = {} if exts is None else {"extensions": exts}
big = json.dumps([{"id": i, "user": "user%d" % (i % 97), "tags": ["alpha", "beta"]} for i in range(60000)])
rng = random.Random(7)
noise = bytes(rng.getrandbits(8) for _ in range(2 << 20))
msgs = ["hello", "hello", "", b"\x00" * 1000, "héllo wörld ✓", big, noise, big[:100000]]
with connect(url, max_size=None, compression="deflate", **opts) as ws:
    for m in msgs:
        ws.send(m)
        got = ws.recv()
        assert got == m, "echo differs for a %d-byte message" % len(m)
    parts = [big[i:i + 4096] for i in range(0, 200000, 4096)]
    ws.send(parts)
    assert ws.recv() == "".join(parts), "fragmented echo differs"
    print("EXT", ws.response.headers.get("Sec-WebSocket-Extensions"))
print("OK")
"#;

/// Runs [`PY_CLIENT`] against `url`; returns its stdout, failing the test on a non-zero exit.
async fn python_client(url: &str, kwargs: &str) -> String {
    let py = common::python();
    let (url, kwargs) = (url.to_owned(), kwargs.to_owned());
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(py)
                .args(["-c", PY_CLIENT, &url, &kwargs])
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("the Python client finishes in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("OK"),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn ext_line(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("EXT "))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn python_client_default_offer_is_accepted_and_echoes_intact() {
    let (url, mut seen) =
        echo_server(AcceptConfig::default().deflate(DeflateConfig::default())).await;
    // websockets' default offer: `permessage-deflate; client_max_window_bits`.
    let out = python_client(&url, "null").await;
    assert_eq!(ext_line(&out), "permessage-deflate");
    let server_side = seen.recv().await.unwrap();
    assert_eq!(server_side.len(), 1, "{server_side:?}");
    assert!(server_side[0].starts_with("permessage-deflate"));
}

#[tokio::test]
async fn python_client_asking_for_no_takeover_and_small_windows_gets_them() {
    let (url, _seen) = echo_server(AcceptConfig::default().deflate(DeflateConfig::default())).await;
    let out = python_client(
        &url,
        r#"{"server_no_context_takeover": true, "client_no_context_takeover": true,
            "server_max_window_bits": 10, "client_max_window_bits": 11}"#,
    )
    .await;
    let ext = ext_line(&out);
    for p in [
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits=10",
        "client_max_window_bits=11",
    ] {
        assert!(ext.contains(p), "{p} missing from {ext:?}");
    }
}

#[tokio::test]
async fn python_client_asking_for_an_8_bit_window_is_answered_and_served() {
    // zlib cannot deflate within 2^8 bytes: the server says yes and sends uncompressed.
    let (url, _seen) = echo_server(AcceptConfig::default().deflate(DeflateConfig::default())).await;
    let out = python_client(
        &url,
        r#"{"server_max_window_bits": 8, "client_max_window_bits": 9}"#,
    )
    .await;
    let ext = ext_line(&out);
    assert!(
        ext.contains("server_max_window_bits=8") && ext.contains("client_max_window_bits=9"),
        "{ext:?}"
    );
}

#[tokio::test]
async fn server_settings_reach_the_python_client() {
    let cfg = DeflateConfig::default()
        .server_no_context_takeover(true)
        .server_max_window_bits(Some(9))
        .client_max_window_bits(Some(12));
    let (url, _seen) = echo_server(AcceptConfig::default().deflate(cfg)).await;
    let ext = ext_line(&python_client(&url, "{}").await);
    assert!(
        ext.contains("server_no_context_takeover")
            && ext.contains("server_max_window_bits=9")
            && ext.contains("client_max_window_bits=12"),
        "{ext:?}"
    );
}

#[tokio::test]
async fn without_deflate_the_offer_is_declined() {
    let (url, mut seen) = echo_server(AcceptConfig::default()).await;
    let out = python_client(&url, "null").await;
    assert_eq!(ext_line(&out), "None");
    assert!(seen.recv().await.unwrap().is_empty());
}

#[tokio::test]
async fn wsc_client_and_wsc_server_compress_both_ways() {
    for (client_cfg, server_cfg) in [
        (DeflateConfig::default(), DeflateConfig::default()),
        (
            DeflateConfig::default()
                .server_no_context_takeover(true)
                .server_max_window_bits(Some(10)),
            DeflateConfig::default().client_no_context_takeover(true),
        ),
    ] {
        let (url, mut seen) = echo_server(AcceptConfig::default().deflate(server_cfg)).await;
        let client = Client::builder().deflate(client_cfg).build().unwrap();
        let mut s = tokio::time::timeout(Duration::from_secs(10), client.connect(&url))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.call().extensions(), seen.recv().await.unwrap());
        let text = "compress me, ".repeat(50_000);
        tokio::time::timeout(Duration::from_secs(20), async {
            for _ in 0..3 {
                s.send(text.as_str()).await.unwrap();
                assert_eq!(s.recv().await.unwrap().unwrap().as_text().unwrap(), text);
            }
            s.send_fragmented(Message::binary(vec![7u8; 300_000]), 10_000)
                .await
                .unwrap();
            assert_eq!(
                s.recv().await.unwrap().unwrap(),
                Message::binary(vec![7u8; 300_000])
            );
            s.close(CloseReason::normal()).await.unwrap();
        })
        .await
        .expect("the exchange ends in time");
    }
}

#[tokio::test]
async fn compressed_bomb_sent_to_the_server_closes_with_1009() {
    // The server allows 1 MiB; 64 MiB of zeros deflate to about 64 KiB on the wire.
    let config = AcceptConfig::default()
        .max_message_size(1 << 20)
        .deflate(DeflateConfig::default());
    let (url, _seen) = echo_server(config).await;
    let client = Client::builder()
        .deflate(DeflateConfig::default())
        .max_message_size(128 << 20)
        .build()
        .unwrap();
    let s = client.connect(&url).await.unwrap();
    s.send(vec![0u8; 64 << 20]).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), s.close_reason())
        .await
        .expect("the server closes in time");
    assert_eq!(reason.code(), CloseCode::TOO_BIG);
}
