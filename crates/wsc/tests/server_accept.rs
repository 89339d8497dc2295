//! `wsc::server::accept` against clients that do not play by the rules: requests that are not
//! upgrades get an HTTP answer, and a client that sends after its Close still gets a clean end.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsc::server::{AcceptConfig, accept};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A server accepting one connection; returns its address and what `accept` said.
async fn one_accept() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<wsc::Session, wsc::Error>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        accept(s, &AcceptConfig::default()).await
    });
    (addr, task)
}

#[tokio::test]
async fn requests_that_are_not_upgrades_get_an_http_answer() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "version 8",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}Sec-WebSocket-Version: 8\r\n\r\n"),
            "HTTP/1.1 426 ",
        ),
        (
            "no key",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n"),
            "HTTP/1.1 400 ",
        ),
        (
            "POST",
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}Sec-WebSocket-Version: 13\r\nContent-Length: 3\r\n\r\na=1"
            ),
            "HTTP/1.1 400 ",
        ),
        (
            "plain GET",
            "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            "HTTP/1.1 400 ",
        ),
        (
            "a head over 64 KiB",
            format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(100 << 10)),
            "HTTP/1.1 431 ",
        ),
        (
            "garbage",
            "\u{1}\u{2} hello there\r\n\r\n".to_owned(),
            "HTTP/1.1 400 ",
        ),
        (
            "a malformed extension offer",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; =1\r\n\r\n"
            ),
            "HTTP/1.1 400 ",
        ),
    ];
    for (what, request, status) in cases {
        let start = Instant::now();
        let (addr, server) = one_accept().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // The whole answer, then a clean end of stream (no reset), in bounded time.
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{what}: no end of stream"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(status), "{what}: {answer:?}");
        assert!(
            answer.contains("Connection: close\r\n"),
            "{what}: {answer:?}"
        );
        if status.contains("426") {
            assert!(
                answer.contains("Sec-WebSocket-Version: 13\r\n"),
                "{what}: {answer:?}"
            );
        }
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len(), "{what}: {answer:?}");
        assert!(
            matches!(server.await.unwrap(), Err(wsc::Error::Handshake(_))),
            "{what}"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
    }
}

#[tokio::test]
async fn a_client_that_closes_before_its_request_ends_gets_nothing() {
    let (addr, server) = one_accept().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    c.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn data_after_the_clients_close_gets_a_clean_close_not_a_reset() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut session = accept(s, &AcceptConfig::default()).await.unwrap();
        while let Some(Ok(_)) = session.recv().await {}
        session.close_reason().await
    });
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(
        format!("GET / HTTP/1.1\r\nHost: x\r\n{UPGRADE}{KEY}Sec-WebSocket-Version: 13\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A masked Close (code 1000, zero mask key), then 256 KiB the server will never use.
    let mut out = vec![0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8];
    out.extend(std::iter::repeat_n(0x55u8, 256 << 10));
    c.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .expect("no end of stream")
        .expect("the server reset the connection instead of closing it");
    assert_eq!(
        rest,
        [0x88, 0x02, 0x03, 0xe8],
        "the server's Close, then EOF"
    );
    assert_eq!(server.await.unwrap().code().as_u16(), 1000);
    assert!(start.elapsed() < Duration::from_secs(5));
}
