//! The main job, end to end: start a small echo server on loopback, connect, send text, binary
//! and a ping, receive the echoes, close with a reason, print the close reason.
//!
//! `cargo run -p wsc --example echo` — or pass a URL to talk to another echo server.
//!
//! The server here is `wsc::server::accept` echoing each message; it answers pings and the
//! Close for itself.

use tokio::net::{TcpListener, TcpStream};
use wsc::{Client, CloseCode, CloseReason, Message, OpCode};

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

/// Echoes one connection: answers the upgrade, then sends back every message it receives.
async fn echo(s: TcpStream) -> Result<(), wsc::Error> {
    let mut session = wsc::server::accept(s, &Default::default()).await?;
    while let Some(m) = session.recv().await {
        session.send(m?).await?;
    }
    Ok(())
}
