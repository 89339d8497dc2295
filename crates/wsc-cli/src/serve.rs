//! `wsc serve`: a small echo or broadcast server, on loopback by default.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Args;
use tokio::net::TcpListener;
use wsc::server::{AcceptConfig, accept};
use wsc::{Message, Sender};

use crate::Failure;

#[derive(Args, Debug)]
pub struct ServeOpts {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:9001")]
    pub addr: String,
    /// Send every message to every connected client instead of echoing it to its sender.
    #[arg(long)]
    pub broadcast: bool,
    /// Print each connection and message on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

pub async fn run(opts: ServeOpts) -> Result<(), Failure> {
    let listener = TcpListener::bind(&opts.addr)
        .await
        .map_err(|e| Failure::new(3, format!("cannot listen on {}: {e}", opts.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(3, e.to_string()))?;
    eprintln!(
        "wsc: {} server listening on ws://{addr}/",
        if opts.broadcast { "broadcast" } else { "echo" }
    );
    serve(listener, opts.broadcast, opts.verbose).await;
    Ok(())
}

/// Starts an echo server in the background; returns its address.
pub async fn spawn_echo(addr: &str) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(3, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(3, e.to_string()))?;
    tokio::spawn(serve(listener, false, false));
    Ok(local)
}

async fn serve(listener: TcpListener, broadcast: bool, verbose: bool) {
    let peers: Arc<Mutex<Vec<Sender>>> = Arc::default();
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let peers = peers.clone();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut session = match accept(stream, &AcceptConfig::default()).await {
                Ok(s) => s,
                Err(e) => {
                    if verbose {
                        eprintln!("wsc: {from}: handshake failed: {}", e.chain());
                    }
                    return;
                }
            };
            if verbose {
                eprintln!("wsc: {from} connected to {}", session.call().url().path());
            }
            if broadcast {
                peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(session.sender());
            }
            while let Some(Ok(m)) = session.recv().await {
                if verbose {
                    eprintln!("wsc: {from} sent {m:?}");
                }
                if broadcast {
                    let all: Vec<Sender> = peers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|s| s.is_open())
                        .cloned()
                        .collect();
                    for p in all {
                        let _ = p.send(Message::clone(&m)).await;
                    }
                } else if session.send(m).await.is_err() {
                    break;
                }
            }
            if broadcast {
                peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(Sender::is_open);
            }
            if verbose {
                eprintln!("wsc: {from} closed: {}", session.close_reason().await);
            }
        });
    }
}
