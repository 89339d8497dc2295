//! The main job, end to end: start a small echo server on loopback, connect, send text, binary
//! and a ping, receive the echoes, close with a reason, print the close reason.
//!
//! `cargo run -p wsc --example echo` — or pass a URL to talk to another echo server.
//!
//! The server here is a few lines over `wsc::proto` in the server role; it is part of the
//! example, not of the library.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsc::proto::{Decoder, Limits, OpCode, Role, encode_frame, handshake};
use wsc::{Client, CloseCode, CloseReason, Frame, Message};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error with its causes: "connecting to 127.0.0.1:9: Connection refused …".
            eprintln!("echo: {}", wsc::Chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("ws://{}/echo", listener.local_addr()?);
            tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    tokio::spawn(echo(s));
                }
            });
            println!("echo server listening on {url}");
            url
        }
    };

    let client = Client::new();
    // The manual form: connect, talk, close.
    let mut session = client.connect_raw(&url).await?;
    println!("connected: HTTP {}", session.call().status());
    session.send("hello, wsc").await?;
    session.send(vec![0xde_u8, 0xad, 0xbe, 0xef]).await?;
    session.ping(&b"are you there?"[..]).await?;
    for _ in 0..3 {
        match session.recv().await {
            Some(Ok(f)) if f.opcode == OpCode::Text => {
                println!("text   <- {}", String::from_utf8_lossy(&f.payload))
            }
            Some(Ok(f)) if f.opcode == OpCode::Binary => {
                println!("binary <- {:02x?}", &f.payload[..])
            }
            Some(Ok(f)) if f.opcode == OpCode::Pong => {
                println!("pong   <- {}", String::from_utf8_lossy(&f.payload))
            }
            other => println!("unexpected: {other:?}"),
        }
    }
    let reply = session
        .close(CloseReason::new(CloseCode::NORMAL, "all done")?)
        .await?;
    println!(
        "closed: we said {}, the server answered {:?}",
        session.close_reason().await,
        reply.map(|r| r.to_string())
    );

    // The scoped form: the session closes itself when the closure returns.
    let echoed = client
        .websocket(&url, async |s: &mut wsc::Session| {
            s.send(Message::text("scoped")).await?;
            s.recv().await.transpose()
        })
        .await?;
    println!("scoped <- {echoed:?}");
    Ok(())
}

/// Echoes one connection: answers the upgrade, echoes data frames, answers pings and Close.
async fn echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    let key = loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
            let key = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            let _ = buf.split_to(n);
            break key.unwrap_or_default();
        }
    };
    let accept = handshake::accept_key(&key);
    s.write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes()).await?;
    let mut decoder = Decoder::new(Role::Server, Limits::default());
    let mut out = BytesMut::new();
    loop {
        while let Ok(Some(f)) = decoder.decode(&mut buf) {
            let f: Frame = f;
            match f.opcode {
                OpCode::Ping => encode_frame(&mut out, OpCode::Pong, true, 0, &f.payload, None),
                OpCode::Pong => {}
                OpCode::Close => {
                    encode_frame(&mut out, OpCode::Close, true, 0, &f.payload, None);
                    s.write_all(&out).await?;
                    return Ok(()); // the server closes TCP first (RFC 6455 §7.1.1)
                }
                op => encode_frame(&mut out, op, f.fin, f.rsv, &f.payload, None),
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
