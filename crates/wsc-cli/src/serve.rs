//! `wsc serve`: a small echo or broadcast server, on loopback by default.
//!
//! Held against hostile clients: at most `--max-connections` sessions (more wait in the
//! listen backlog), an accept loop that backs off when the process runs out of file
//! descriptors instead of spinning, an optional idle timeout, and broadcast subscribers that
//! are dropped when they fall too far behind instead of stalling everyone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use wsc::server::{AcceptConfig, accept};
use wsc::{CloseReason, DeflateConfig, Message, Sender};

use crate::Failure;
use crate::opts::parse_duration;

#[derive(Args, Debug)]
pub struct ServeOpts {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:9001")]
    pub addr: String,
    /// Send every message to every connected client instead of echoing it to its sender (a
    /// client that falls more than 8 MiB behind is disconnected with 1008).
    #[arg(long)]
    pub broadcast: bool,
    /// Print one line per session on stderr when it ends (address, path, subprotocol,
    /// messages and bytes received, close reason, duration), and one per failed handshake.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Serve wss: the certificate chain (PEM), leaf first; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// A subprotocol this server speaks (repeatable, in preference order): the first one the
    /// client also offers is chosen.
    #[arg(long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    /// Serve at most this many sessions at once; further connections wait to be accepted.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Close a session (with 1001) when its client sent no message for this long, or does
    /// not take an echo for this long (e.g. 5m; default: never).
    #[arg(long = "idle-timeout", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Ping each client this often and close (1011) a session whose client does not answer
    /// within the same time (default 20s with --forward or --exec, else never; e.g. 30s).
    #[arg(long = "ping-interval", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_interval: Option<Duration>,
    /// Carry each session to a new TCP connection to HOST:PORT instead of echoing: messages
    /// received are written to it, bytes read from it are sent as binary messages
    /// (e.g. --forward tcp:127.0.0.1:22).
    #[arg(long, value_name = "tcp:HOST:PORT", conflicts_with_all = ["broadcast", "exec", "idle_timeout"])]
    pub forward: Option<String>,
    /// Run this command (with sh -c) for each session instead of echoing: each message is a
    /// line on its stdin, each line it prints a message; its stderr is wsc's. The session
    /// closes with 1000 when it exits with 0, else with 1011; when the session ends first, its
    /// stdin is closed and it has 2 s to exit before it is killed
    /// (e.g. --exec 'stdbuf -oL tr a-z A-Z').
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["broadcast", "idle_timeout"])]
    pub exec: Option<String>,
    /// Accept permessage-deflate compression (RFC 7692) from clients that offer it.
    #[arg(long = "compress")]
    pub compress: bool,
}

pub async fn run(opts: ServeOpts) -> Result<(), Failure> {
    let mut settings = Settings::from(&opts);
    if let Some(spec) = &opts.forward {
        settings.forward = Some(crate::forward::address(spec, "tcp")?.to_owned());
    }
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        settings.tls = Some(tls_acceptor(cert, key)?);
    }
    let listener = TcpListener::bind(&opts.addr)
        .await
        .map_err(|e| Failure::new(3, format!("cannot listen on {}: {e}", opts.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(3, e.to_string()))?;
    let role = match (&settings.forward, &settings.exec) {
        (Some(to), _) => format!("forwarding server (to tcp:{to})"),
        (_, Some(_)) => "exec server".to_owned(),
        _ if opts.broadcast => "broadcast server".to_owned(),
        _ => "echo server".to_owned(),
    };
    eprintln!(
        "wsc: {role} listening on {}://{addr}/",
        if settings.tls.is_some() { "wss" } else { "ws" },
    );
    serve(listener, settings).await;
    Ok(())
}

/// A TLS acceptor for the certificate chain and key in these PEM files (exit code 2 when they
/// cannot be read or do not match).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, Failure> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        Failure::new(2, format!("cannot use {}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(1, format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(key, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Starts an echo server in the background; returns its address.
pub async fn spawn_echo(addr: &str) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(3, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(3, e.to_string()))?;
    tokio::spawn(serve(listener, Settings::default()));
    Ok(local)
}

/// What a server does with its sessions.
struct Settings {
    broadcast: bool,
    verbose: bool,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Bounds the TLS handshake and the WebSocket handshake after it (set in `accept` too).
    handshake_timeout: Duration,
    accept: AcceptConfig,
    /// `HOST:PORT` each session is carried to.
    forward: Option<String>,
    /// The command each session runs.
    exec: Option<String>,
}

/// How long a client has for its TLS and WebSocket handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            broadcast: false,
            verbose: false,
            max_connections: 1024,
            idle_timeout: None,
            tls: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            accept: AcceptConfig::default().handshake_timeout(HANDSHAKE_TIMEOUT),
            forward: None,
            exec: None,
        }
    }
}

impl From<&ServeOpts> for Settings {
    fn from(o: &ServeOpts) -> Self {
        // A bridged session may stop reading its client while the other end is slow: pings
        // still find a client that went away.
        let bridged = o.forward.is_some() || o.exec.is_some();
        let ping_interval = o
            .ping_interval
            .or(bridged.then_some(BRIDGE_PING))
            .filter(|p| !p.is_zero());
        let mut accept = AcceptConfig::default()
            .protocols(o.protocols.clone())
            .ping_interval(ping_interval)
            .handshake_timeout(HANDSHAKE_TIMEOUT);
        if o.compress {
            accept = accept.deflate(DeflateConfig::default());
        }
        Settings {
            broadcast: o.broadcast,
            verbose: o.verbose,
            max_connections: o.max_connections as usize,
            idle_timeout: o.idle_timeout,
            tls: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            accept,
            forward: None,
            exec: o.exec.clone(),
        }
    }
}

/// The keepalive of `--forward` and `--exec` sessions unless `--ping-interval` says otherwise.
const BRIDGE_PING: Duration = Duration::from_secs(20);

/// How far (in message bytes) a broadcast subscriber may fall behind before it is dropped.
const BROADCAST_LAG: usize = 8 << 20;
/// The first and the longest wait after an accept failed for want of resources.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether an accept error means the process or system is out of something that ending
/// sessions gives back (descriptors, buffers), so that retrying at once would only spin.
pub(crate) fn out_of_resources(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux, macOS and the BSDs alike.
    const CODES: &[i32] = if cfg!(target_os = "linux") {
        &[24, 23, 105, 12]
    } else {
        &[24, 23, 55, 12]
    };
    e.raw_os_error().is_some_and(|c| CODES.contains(&c))
}

/// A broadcast subscriber: its queue of messages to send, and how many bytes wait in it.
struct Subscriber {
    queue: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicUsize>,
    sender: Sender,
}

type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

async fn serve(listener: TcpListener, settings: Settings) {
    let settings = Arc::new(settings);
    let peers: Subscribers = Arc::default();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut backoff = BACKOFF_MIN;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => {
                backoff = BACKOFF_MIN;
                accepted
            }
            Err(e) if out_of_resources(&e) => {
                if settings.verbose {
                    eprintln!("wsc: accepting: {e}; retrying in {backoff:?}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            // A connection that failed before it was accepted: nothing to wait for.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (settings, peers) = (settings.clone(), peers.clone());
        tokio::spawn(async move {
            let Some(tls) = &settings.tls else {
                return session(stream, from, &settings, peers, slot).await;
            };
            // The TLS handshake is bounded as the WebSocket one is.
            let limit = settings.handshake_timeout;
            match tokio::time::timeout(limit, tls.accept(stream)).await {
                Ok(Ok(stream)) => session(stream, from, &settings, peers, slot).await,
                Ok(Err(e)) if settings.verbose => eprintln!("wsc: {from}: TLS failed: {e}"),
                Err(_) if settings.verbose => eprintln!("wsc: {from}: TLS timed out"),
                _ => {}
            }
        });
    }
}

async fn session<S>(
    stream: S,
    from: SocketAddr,
    settings: &Settings,
    peers: Subscribers,
    _slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let verbose = settings.verbose;
    let started = std::time::Instant::now();
    let mut session = match accept(stream, &settings.accept).await {
        Ok(s) => s,
        Err(e) => {
            if verbose {
                eprintln!("wsc: {from}: handshake failed: {}", e.chain());
            }
            return;
        }
    };
    if settings.forward.is_some() || settings.exec.is_some() {
        return bridged(session, from, settings, started).await;
    }
    let (mut messages, mut bytes) = (0u64, 0u64);
    if settings.broadcast {
        subscribe(&peers, session.sender());
    }
    // Bounds one step (a message in, an echo out) when an idle timeout is set.
    let within = |t: Option<Duration>| async move {
        match t {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    loop {
        let next = tokio::select! {
            m = session.recv() => m,
            () = within(settings.idle_timeout) => {
                idle_close(&session.sender()).await;
                break;
            }
        };
        let Some(Ok(m)) = next else { break };
        messages += 1;
        bytes += m.len() as u64;
        if settings.broadcast {
            broadcast(&peers, &m, verbose);
        } else {
            tokio::select! {
                r = session.send(m) => if r.is_err() { break },
                () = within(settings.idle_timeout) => {
                    idle_close(&session.sender()).await;
                    break;
                }
            }
        }
    }
    if verbose {
        let reason = session.close_reason().await;
        let call = session.call();
        eprintln!(
            "wsc: {from} {}{}: {messages} messages, {bytes} bytes in; closed {reason} after {:.1?}",
            call.url().path(),
            call.protocol()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default(),
            started.elapsed(),
        );
    }
}

/// A session carried to a TCP connection (`--forward`) or a program (`--exec`).
async fn bridged(
    session: wsc::Session,
    from: SocketAddr,
    settings: &Settings,
    started: std::time::Instant,
) {
    let path = session.call().url().path().to_owned();
    let (tx, rx) = session.split();
    let outcome = if let Some(to) = &settings.forward {
        // Connecting is bounded as the handshake is; a session that cannot be carried ends
        // with 1011 at once.
        let limit = settings.handshake_timeout;
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(to.as_str())).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                crate::bridge::tcp(tx, rx, read, write).await
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                if let Ok(r) = CloseReason::new(1011, "cannot reach the forward address") {
                    let _ = tx.close(r).await;
                }
                crate::bridge::Outcome {
                    reason: tx.close_reason().await,
                    problem: Some(format!("cannot connect to {to}: {why}")),
                    status: None,
                }
            }
        }
    } else if let Some(command) = &settings.exec {
        crate::bridge::exec(tx, rx, command).await
    } else {
        return;
    };
    // A failure to reach the other end is always worth a line; the rest only with -v.
    if let Some(p) = &outcome.problem {
        eprintln!("wsc: {from}: {p}");
    }
    if settings.verbose {
        let status = outcome
            .status
            .map(|s| format!(", program {s}"))
            .unwrap_or_default();
        eprintln!(
            "wsc: {from} {path}: closed {}{status} after {:.1?}",
            outcome.reason,
            started.elapsed(),
        );
    }
}

async fn idle_close(s: &Sender) {
    if let Ok(r) = CloseReason::new(1001, "idle timeout") {
        let _ = s.close(r).await;
    }
}

/// Adds `sender` to the broadcast, with a task that feeds it from its own queue (so that a
/// slow subscriber delays only itself).
fn subscribe(peers: &Subscribers, sender: Sender) {
    let (queue, mut rx) = mpsc::unbounded_channel::<Message>();
    let queued = Arc::new(AtomicUsize::new(0));
    let (out, left) = (sender.clone(), queued.clone());
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let len = m.len();
            let sent = out.send(m).await;
            left.fetch_sub(len, Ordering::AcqRel);
            if sent.is_err() {
                break;
            }
        }
    });
    peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Subscriber {
            queue,
            queued,
            sender,
        });
}

/// Queues `m` for every subscriber without waiting for any; drops those that are closed and
/// disconnects (1008) those that fell more than [`BROADCAST_LAG`] bytes behind.
fn broadcast(peers: &Subscribers, m: &Message, verbose: bool) {
    let mut all = peers.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|p| {
        if !p.sender.is_open() {
            return false;
        }
        let behind = p.queued.fetch_add(m.len(), Ordering::AcqRel) + m.len();
        if behind > BROADCAST_LAG || p.queue.send(Message::clone(m)).is_err() {
            if verbose {
                eprintln!("wsc: a subscriber fell {behind} bytes behind; disconnecting it");
            }
            let s = p.sender.clone();
            tokio::spawn(async move {
                if let Ok(r) = CloseReason::new(1008, "too slow to take the broadcast") {
                    let _ = s.close(r).await;
                }
            });
            return false;
        }
        true
    });
}
