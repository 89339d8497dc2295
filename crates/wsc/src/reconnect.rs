//! Reconnecting sessions: the retry loop Ktor users write by hand, done once and right.
//!
//! A supervisor task connects, runs the caller's hook after each (re)connect, pumps messages
//! both ways, and when the connection drops or the handshake fails waits with exponential
//! backoff and full jitter before the next attempt. It never reconnects after the caller
//! closes. A server's 1012 (restarting) and 1013 (try again later) are waited out with the
//! same backoff. Sends made while disconnected are queued (bounded) or rejected, as configured,
//! and queued ones go out in order after the next connect. A message handed to a connection
//! that then dropped before writing it may be lost: delivery is at most once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use wsc_proto::{CloseReason, Message};

use crate::client::RequestBuilder;
use crate::error::Error;
use crate::session::Sender;
use crate::{Client, IntoRequest};

/// The hook run after every successful (re)connect, before queued messages go out: to
/// authenticate or resubscribe. An error closes that connection with 1011 and counts as a
/// failed attempt.
pub type OnConnect =
    Arc<dyn Fn(Sender) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

/// What to do with sends while disconnected.
///
/// Sends reach the current session through a queue in both cases, and its size also bounds
/// sends while connected: a send waits while that many messages are on their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhileDisconnected {
    /// Queue up to this many messages; a send beyond it fails with [`Error::QueueFull`] while
    /// disconnected and waits while connected.
    Queue(usize),
    /// Fail sends at once with [`Error::Disconnected`]; while connected, up to 64 messages
    /// are on their way before a send waits.
    Reject,
}

/// Backoff and queueing for a [`Reconnecting`] session.
///
/// ```
/// use std::time::Duration;
/// let cfg = wsc::ReconnectConfig::default()
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(Some(8))
///     .while_disconnected(wsc::WhileDisconnected::Queue(1000))
///     .on_connect(|sender| async move { sender.send("subscribe:prices").await });
/// # let _ = cfg;
/// ```
#[derive(Clone)]
pub struct ReconnectConfig {
    initial_delay: Duration,
    max_delay: Duration,
    max_attempts: Option<u32>,
    jitter: bool,
    stable_after: Duration,
    while_disconnected: WhileDisconnected,
    on_connect: Option<OnConnect>,
}

impl std::fmt::Debug for ReconnectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectConfig")
            .field("initial_delay", &self.initial_delay)
            .field("max_delay", &self.max_delay)
            .field("max_attempts", &self.max_attempts)
            .field("jitter", &self.jitter)
            .field("stable_after", &self.stable_after)
            .field("while_disconnected", &self.while_disconnected)
            .finish()
    }
}

impl Default for ReconnectConfig {
    /// 500 ms initial delay doubling to at most 30 s, forever, full jitter, up to 1024 queued.
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: None,
            jitter: true,
            stable_after: Duration::from_secs(5),
            while_disconnected: WhileDisconnected::Queue(1024),
            on_connect: None,
        }
    }
}

impl ReconnectConfig {
    /// The first wait. Default 500 ms.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }
    /// The longest wait. Default 30 s.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }
    /// Gives up after this many failed attempts in a row (`None`: never). Default `None`.
    /// A connection that opened but ended within [`stable_after`](Self::stable_after) counts
    /// as a failed attempt, so a server that drops every connection at once is given up on.
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }
    /// Full jitter (a uniformly random wait up to the backoff cap), as AWS recommends against
    /// thundering herds. Default on; off gives the cap itself.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }
    /// How long a connection must stay up before the attempt count and the backoff start
    /// afresh. Default 5 s.
    pub fn stable_after(mut self, d: Duration) -> Self {
        self.stable_after = d;
        self
    }
    /// Queue or reject sends while disconnected. Default `Queue(1024)`.
    pub fn while_disconnected(mut self, w: WhileDisconnected) -> Self {
        self.while_disconnected = w;
        self
    }
    /// Runs `hook` after each successful connect.
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Sender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |s| Box::pin(hook(s))));
        self
    }

    /// The backoff cap before attempt `n` (1-based): `initial × 2^(n−1)`, at most `max_delay`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// A change in a reconnecting session's state.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Attempt `attempt` (1-based, counting since the last open connection) is starting.
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// Connected, and the hook (if any) succeeded.
    Open,
    /// A connection ended or an attempt failed.
    Closed {
        /// The close reason, if a connection was open.
        reason: Option<CloseReason>,
        /// The error, if it failed.
        error: Option<Error>,
    },
    /// Waiting before the next attempt.
    Waiting {
        /// How long.
        delay: Duration,
        /// The attempt that follows.
        attempt: u32,
    },
    /// Stopped after `attempts` failed attempts in a row.
    GaveUp {
        /// How many.
        attempts: u32,
    },
}

struct Control {
    connected: AtomicBool,
    stopped: AtomicBool,
    stop: Notify,
    /// Handles alive (senders, the session's own included): the background task ends with
    /// the last one, whatever it is doing.
    handles: std::sync::atomic::AtomicUsize,
}

/// The sending side of a [`Reconnecting`] session: cheap to clone, valid across reconnects.
pub struct ReconnectingSender {
    tx: mpsc::Sender<Message>,
    control: Arc<Control>,
    policy: WhileDisconnected,
}

impl std::fmt::Debug for ReconnectingSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingSender")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Clone for ReconnectingSender {
    fn clone(&self) -> Self {
        self.control.handles.fetch_add(1, Ordering::Relaxed);
        ReconnectingSender {
            tx: self.tx.clone(),
            control: self.control.clone(),
            policy: self.policy,
        }
    }
}

impl Drop for ReconnectingSender {
    fn drop(&mut self) {
        if self.control.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.control.stopped.store(true, Ordering::Release);
            self.control.stop.notify_one();
        }
    }
}

impl ReconnectingSender {
    /// Sends `message` now, or queues it while disconnected (or rejects it, as configured).
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        if self.control.stopped.load(Ordering::Acquire) {
            return Err(Error::Closed(None));
        }
        let m = message.into();
        if self.control.connected.load(Ordering::Acquire) {
            return self.tx.send(m).await.map_err(|_| Error::Closed(None));
        }
        match self.policy {
            WhileDisconnected::Reject => Err(Error::Disconnected),
            WhileDisconnected::Queue(_) => self.tx.try_send(m).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Error::Closed(None),
            }),
        }
    }

    /// Whether a connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.control.connected.load(Ordering::Acquire)
    }

    /// Closes the current connection normally and stops reconnecting.
    pub fn close(&self) {
        self.control.stopped.store(true, Ordering::Release);
        self.control.stop.notify_one();
    }
}

/// A session that reconnects by itself. Made by [`Client::reconnecting`].
///
/// ```no_run
/// # async fn demo() -> Result<(), wsc::Error> {
/// let client = wsc::Client::new();
/// let mut rc = client.reconnecting("ws://127.0.0.1:9001/feed", wsc::ReconnectConfig::default())?;
/// let mut events = rc.events();
/// tokio::spawn(async move {
///     while let Ok(e) = events.recv().await {
///         eprintln!("connection: {e:?}");
///     }
/// });
/// rc.send("hello").await?;
/// while let Some(m) = rc.recv().await {
///     println!("{m:?}");
/// }
/// # Ok(()) }
/// ```
pub struct Reconnecting {
    sender: ReconnectingSender,
    incoming: mpsc::Receiver<Message>,
    events: broadcast::Sender<ConnectionEvent>,
}

impl std::fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("connected", &self.sender.is_connected())
            .finish()
    }
}

impl Reconnecting {
    /// The next message from whichever connection is open; `None` once the session stopped
    /// (closed by the caller, or gave up).
    pub async fn recv(&mut self) -> Option<Message> {
        self.incoming.recv().await
    }
    /// A subscription to state changes (the last 256 are kept for a slow reader).
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }
    /// A sender for other tasks.
    pub fn sender(&self) -> ReconnectingSender {
        self.sender.clone()
    }
    /// Sends; see [`ReconnectingSender::send`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.sender.send(message).await
    }
    /// Closes normally and stops reconnecting.
    pub fn close(&self) {
        self.sender.close();
    }
}

impl Client {
    /// A session to `target` that reconnects when the connection drops or a connect fails.
    /// The URL is checked now; connecting happens in the background.
    pub fn reconnecting(
        &self,
        target: impl IntoRequest,
        config: ReconnectConfig,
    ) -> Result<Reconnecting, Error> {
        let request = target.into_request()?;
        let capacity = match config.while_disconnected {
            WhileDisconnected::Queue(n) => n.max(1),
            WhileDisconnected::Reject => 64,
        };
        let (tx, rx) = mpsc::channel(capacity);
        let (in_tx, in_rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(256);
        let control = Arc::new(Control {
            connected: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
            handles: std::sync::atomic::AtomicUsize::new(1),
        });
        let sender = ReconnectingSender {
            tx,
            control: control.clone(),
            policy: config.while_disconnected,
        };
        let sup = Supervisor {
            client: self.clone(),
            request,
            config,
            control,
            events: events.clone(),
            outgoing: rx,
            incoming: in_tx,
            pending: None,
        };
        tokio::spawn(sup.run());
        Ok(Reconnecting {
            sender,
            incoming: in_rx,
            events,
        })
    }
}

struct Supervisor {
    client: Client,
    request: crate::Request,
    config: ReconnectConfig,
    control: Arc<Control>,
    events: broadcast::Sender<ConnectionEvent>,
    outgoing: mpsc::Receiver<Message>,
    incoming: mpsc::Sender<Message>,
    /// A message taken from the queue whose connection dropped before it could be sent.
    pending: Option<Message>,
}

enum Ended {
    /// The caller closed; stop.
    Stop,
    /// The connection ended; maybe reconnect.
    Dropped,
}

impl Supervisor {
    fn emit(&self, e: ConnectionEvent) {
        let _ = self.events.send(e);
    }

    fn stopped(&self) -> bool {
        self.control.stopped.load(Ordering::Acquire)
    }

    async fn run(mut self) {
        let mut attempt = 0u32;
        while !self.stopped() {
            attempt += 1;
            self.emit(ConnectionEvent::Connecting { attempt });
            let builder = RequestBuilder::from_parts(self.client.clone(), self.request.clone());
            let connected = tokio::select! {
                r = builder.connect() => r,
                _ = self.control.stop.notified() => break,
            };
            if self.stopped() {
                // Closed, or every handle dropped, while connecting: no hook, no session.
                if let Ok(session) = connected {
                    let _ = session.close(CloseReason::normal()).await;
                }
                break;
            }
            match connected {
                Ok(session) => {
                    let hook = self.config.on_connect.clone();
                    let hooked = match hook {
                        Some(h) => h(session.sender()).await,
                        None => Ok(()),
                    };
                    if let Err(e) = hooked {
                        let _ = session
                            .close(CloseReason::truncated(1011, &e.to_string()))
                            .await;
                        self.emit(ConnectionEvent::Closed {
                            reason: None,
                            error: Some(e),
                        });
                    } else {
                        self.control.connected.store(true, Ordering::Release);
                        self.emit(ConnectionEvent::Open);
                        let opened = tokio::time::Instant::now();
                        let ended = self.pump(session).await;
                        self.control.connected.store(false, Ordering::Release);
                        if let Ended::Stop = ended {
                            break;
                        }
                        // A connection that stayed up counts afresh: the first wait is the
                        // initial delay (so a server's 1012/1013 is never hammered), then it
                        // grows. One that ended at once is a failed attempt like a refused one.
                        if opened.elapsed() >= self.config.stable_after {
                            attempt = 0;
                        }
                    }
                }
                Err(e) => self.emit(ConnectionEvent::Closed {
                    reason: None,
                    error: Some(e),
                }),
            }
            if self.stopped() {
                break;
            }
            if let Some(max) = self.config.max_attempts
                && attempt >= max
            {
                self.emit(ConnectionEvent::GaveUp { attempts: attempt });
                break;
            }
            let cap = self.config.cap(attempt.max(1));
            let delay = if self.config.jitter {
                cap.mul_f64(rand::random::<f64>())
            } else {
                cap
            };
            self.emit(ConnectionEvent::Waiting {
                delay,
                attempt: attempt + 1,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.control.stop.notified() => break,
            }
        }
        self.control.stopped.store(true, Ordering::Release);
        self.control.connected.store(false, Ordering::Release);
    }

    async fn pump(&mut self, session: crate::Session) -> Ended {
        let (tx, mut rx) = session.split();
        if let Some(m) = self.pending.take()
            && tx.send(m.clone()).await.is_err()
        {
            self.pending = Some(m);
        }
        let stop = loop {
            tokio::select! {
                biased;
                _ = self.control.stop.notified() => break true,
                m = rx.recv() => match m {
                    Some(Ok(m)) => {
                        let _ = self.incoming.send(m).await;
                    }
                    Some(Err(_)) | None => break false,
                },
                out = self.outgoing.recv(), if self.pending.is_none() => match out {
                    Some(m) => {
                        if tx.send(m.clone()).await.is_err() {
                            self.pending = Some(m);
                        }
                    }
                    // Every sender is gone: nothing more will be sent; close normally.
                    None => break true,
                },
            }
        };
        if stop || self.stopped() {
            let _ = tx.close(CloseReason::normal()).await;
            self.emit(ConnectionEvent::Closed {
                reason: tx.try_close_reason(),
                error: None,
            });
            return Ended::Stop;
        }
        let reason = tx.close_reason().await;
        self.emit(ConnectionEvent::Closed {
            reason: Some(reason),
            error: None,
        });
        Ended::Dropped
    }
}
