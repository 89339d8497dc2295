//! `wsc forward tcp-listen:ADDR URL`: each TCP connection accepted on ADDR becomes a
//! WebSocket session to URL, its bytes carried as binary messages both ways.

use std::sync::Arc;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Failure;
use crate::opts::ConnectOpts;

#[derive(Args, Debug)]
pub struct ForwardOpts {
    /// Where to accept TCP connections: `tcp-listen:HOST:PORT` (port 0 picks a free one).
    #[arg(value_name = "tcp-listen:ADDR")]
    pub listen: String,
    /// The ws:// or wss:// URL each connection is carried to.
    pub url: String,
    /// Carry at most this many connections at once; further ones wait to be accepted.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    #[command(flatten)]
    pub connect: ConnectOpts,
}

/// The address in a `tcp-listen:ADDR` (or `tcp:ADDR`) specification.
pub fn address<'a>(spec: &'a str, scheme: &str) -> Result<&'a str, Failure> {
    spec.strip_prefix(scheme)
        .and_then(|s| s.strip_prefix(':'))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            Failure::new(
                2,
                format!("bad address {spec:?}: expected {scheme}:HOST:PORT"),
            )
        })
}

/// The wait before accepting again when the process ran out of descriptors.
const BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn run(opts: ForwardOpts) -> Result<(), Failure> {
    let addr = address(&opts.listen, "tcp-listen")?;
    let client = opts.connect.client()?;
    // The URL and headers are checked once, before any connection is accepted.
    let _ = opts.connect.request(&client, &opts.url)?;
    wsc::IntoRequest::into_request(opts.url.as_str()).map_err(|e| crate::failure(&e))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(3, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(3, e.to_string()))?;
    eprintln!("wsc: forwarding tcp://{local} to {}", opts.url);
    let slots = Arc::new(Semaphore::new(opts.max_connections as usize));
    let opts = Arc::new(opts);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) if crate::serve::out_of_resources(&e) => {
                // Out of descriptors or buffers: wait for connections to end rather than spin.
                if opts.connect.verbose {
                    eprintln!("wsc: accepting: {e}; retrying in {BACKOFF:?}");
                }
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            // A connection that failed before it was accepted: nothing to wait for.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (opts, client) = (opts.clone(), client.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let verbose = opts.connect.verbose;
            let request = match opts.connect.request(&client, &opts.url) {
                Ok(r) => r,
                Err(f) => return eprintln!("wsc: {from}: {}", f.message),
            };
            let session = match request.connect().await {
                Ok(s) => s,
                // The TCP client sees its connection closed: there is no one to carry it to.
                Err(e) => return eprintln!("wsc: {from}: {}", e.chain()),
            };
            let started = std::time::Instant::now();
            let extensions = session.call().extensions().join(", ");
            let (tx, rx) = session.split();
            let (read, write) = stream.into_split();
            let outcome = crate::bridge::tcp(tx, rx, read, write).await;
            if let Some(p) = &outcome.problem {
                eprintln!("wsc: {from}: {p}");
            }
            if verbose {
                let extensions = if extensions.is_empty() {
                    String::new()
                } else {
                    format!(" ({extensions})")
                };
                eprintln!(
                    "wsc: {from}{extensions}: closed {} after {:.1?}",
                    outcome.reason,
                    started.elapsed()
                );
            }
        });
    }
}
