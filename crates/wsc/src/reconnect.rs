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

use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use wsc_proto::{CloseReason, Message};

use crate::client::RequestBuilder;
use crate::convert::Converter;
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

/// A change in a reconnecting session's state. `Display` (and `Debug`) show an error whole,
/// with its causes: "closed: connecting to 127.0.0.1:9001: Connection refused (os error 111)".
#[derive(Clone)]
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

impl std::fmt::Display for ConnectionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionEvent::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            ConnectionEvent::Open => f.write_str("open"),
            ConnectionEvent::Closed { reason, error } => {
                f.write_str("closed")?;
                if let Some(r) = reason {
                    write!(f, " ({r})")?;
                }
                if let Some(e) = error {
                    write!(f, ": {}", e.chain())?;
                }
                Ok(())
            }
            ConnectionEvent::Waiting { delay, attempt } => {
                write!(f, "waiting {delay:.1?} before attempt {attempt}")
            }
            ConnectionEvent::GaveUp { attempts } => {
                write!(f, "gave up after {attempts} failed attempts")
            }
        }
    }
}

impl std::fmt::Debug for ConnectionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionEvent::Connecting { attempt } => f
                .debug_struct("Connecting")
                .field("attempt", attempt)
                .finish(),
            ConnectionEvent::Open => f.write_str("Open"),
            ConnectionEvent::Closed { reason, error } => f
                .debug_struct("Closed")
                .field("reason", reason)
                .field("error", &error.as_ref().map(|e| e.chain().to_string()))
                .finish(),
            ConnectionEvent::Waiting { delay, attempt } => f
                .debug_struct("Waiting")
                .field("delay", delay)
                .field("attempt", attempt)
                .finish(),
            ConnectionEvent::GaveUp { attempts } => f
                .debug_struct("GaveUp")
                .field("attempts", attempts)
                .finish(),
        }
    }
}

struct Control {
    connected: AtomicBool,
    stopped: AtomicBool,
    stop: Notify,
    /// Handles alive (senders, the session's own included): the background task ends with
    /// the last one, whatever it is doing.
    handles: std::sync::atomic::AtomicUsize,
    /// The reason the caller closed with (the first close wins).
    close_with: std::sync::Mutex<Option<CloseReason>>,
    /// How the session ended, once the background task is done: the peer's answer to our
    /// Close (`None` when no connection was open), or why closing failed.
    done: watch::Sender<Option<Result<Option<CloseReason>, Error>>>,
}

impl Control {
    fn stop(&self, reason: Option<CloseReason>) {
        if let Some(r) = reason {
            let mut c = self.close_with.lock().unwrap_or_else(|p| p.into_inner());
            c.get_or_insert(r);
        }
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
    }

    async fn ended(&self) -> Result<Option<CloseReason>, Error> {
        let mut rx = self.done.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(None)),
            // The task is gone without saying (its runtime shut down).
            Err(_) => Err(Error::Closed(None)),
        }
    }
}

/// What goes to the background task, in order.
enum Out {
    Message(Message),
    /// Answered once everything before it is written to a connection.
    Flush(oneshot::Sender<Result<(), Error>>),
}

/// The sending side of a [`Reconnecting`] session: cheap to clone, valid across reconnects.
pub struct ReconnectingSender {
    tx: mpsc::Sender<Out>,
    control: Arc<Control>,
    policy: WhileDisconnected,
    converter: Option<Arc<dyn Converter>>,
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
            converter: self.converter.clone(),
        }
    }
}

impl Drop for ReconnectingSender {
    fn drop(&mut self) {
        if self.control.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.control.stop(None);
        }
    }
}

impl ReconnectingSender {
    /// Sends `message` now, or queues it while disconnected (or rejects it, as configured).
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.submit(Out::Message(message.into())).await
    }

    async fn submit(&self, out: Out) -> Result<(), Error> {
        if self.control.stopped.load(Ordering::Acquire) {
            return Err(Error::Closed(None));
        }
        if self.control.connected.load(Ordering::Acquire) {
            return self.tx.send(out).await.map_err(|_| Error::Closed(None));
        }
        match self.policy {
            WhileDisconnected::Reject => Err(Error::Disconnected),
            WhileDisconnected::Queue(_) => self.tx.try_send(out).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Error::Closed(None),
            }),
        }
    }

    /// Serializes `value` with the client's converter and sends it, as
    /// [`Sender::send_serialized`] does.
    pub async fn send_serialized<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), Error> {
        let c = self.converter.as_ref().ok_or(Error::NoConverter)?;
        let m = c
            .serialize(&value as &dyn erased_serde::Serialize)
            .map_err(|e| Error::Serialize(e.into()))?;
        self.send(m).await
    }

    /// Waits until every message sent before this call has been written to a connection and
    /// flushed. While disconnected it waits for the next connection (with
    /// [`WhileDisconnected::Reject`] it fails at once with [`Error::Disconnected`]); it fails
    /// with [`Error::Closed`] if the session stops first.
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, done) = oneshot::channel();
        self.submit(Out::Flush(reply)).await?;
        done.await.unwrap_or(Err(Error::Closed(None)))
    }

    /// Whether a connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.control.connected.load(Ordering::Acquire)
    }

    /// Stops reconnecting and closes the open connection, if any, with `reason`, after the
    /// messages already handed to it; waits for the closing handshake and returns the peer's
    /// reason, as [`Sender::close`] does (`Ok(None)` if no connection was open). Messages sent
    /// before it go out first when a connection is open; those queued while disconnected are
    /// dropped. Later calls return the same result.
    pub async fn close(&self, reason: CloseReason) -> Result<Option<CloseReason>, Error> {
        self.control.stop(Some(reason));
        self.control.ended().await
    }
}

/// A session that reconnects by itself. Made by [`Client::reconnecting`].
///
/// It has a session's API across connections: [`send`](Self::send),
/// [`send_serialized`](Self::send_serialized), [`flush`](Self::flush),
/// [`recv`](Self::recv) (also a [`Stream`](futures_core::Stream)),
/// [`receive_deserialized`](Self::receive_deserialized) and [`close`](Self::close); what
/// happens to the connections is in [`events`](Self::events).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsc::Error> {
/// let client = wsc::Client::new();
/// let mut rc = client.reconnecting("ws://127.0.0.1:9001/feed", wsc::ReconnectConfig::default())?;
/// let mut events = rc.events();
/// tokio::spawn(async move {
///     use tokio::sync::broadcast::error::RecvError;
///     loop {
///         match events.recv().await {
///             Ok(e) => eprintln!("connection: {e}"),
///             Err(RecvError::Lagged(n)) => eprintln!("({n} events missed)"),
///             Err(RecvError::Closed) => break,
///         }
///     }
/// });
/// rc.send("hello").await?;
/// while let Some(m) = rc.recv().await {
///     match m {
///         Ok(m) => println!("{m:?}"),
///         // A connection failed (it is being replaced): say so and go on.
///         Err(e) => eprintln!("{}", e.chain()),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Reconnecting {
    sender: ReconnectingSender,
    incoming: mpsc::Receiver<Result<Message, Error>>,
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
    /// The next message from whichever connection is open, or the error that ended a
    /// connection (a protocol violation, a message over a limit, a ping timeout, the network:
    /// the session goes on with the next connection); `None` once the session stopped (closed
    /// by the caller, every sender dropped, or gave up). Connections that could not be opened
    /// show only in the [`events`](Self::events).
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        self.incoming.recv().await
    }

    /// The next message read as `T` with the client's converter, as
    /// [`Receiver::receive_deserialized`](crate::Receiver::receive_deserialized) does: a
    /// message that does not convert is [`Error::Deserialize`] (it carries the message); a
    /// stopped session is [`Error::Closed`].
    pub async fn receive_deserialized<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<T, Error> {
        let converter = self.sender.converter.clone().ok_or(Error::NoConverter)?;
        match self.recv().await {
            None => Err(Error::Closed(None)),
            Some(Err(e)) => Err(e),
            Some(Ok(m)) => {
                crate::convert::deserialize::<T>(&*converter, &m).map_err(|e| Error::Deserialize {
                    message: Box::new(m),
                    source: e.into(),
                })
            }
        }
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
    /// Sends a value; see [`ReconnectingSender::send_serialized`].
    pub async fn send_serialized<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), Error> {
        self.sender.send_serialized(value).await
    }
    /// Waits for what was sent to be written; see [`ReconnectingSender::flush`].
    pub async fn flush(&self) -> Result<(), Error> {
        self.sender.flush().await
    }
    /// Closes with `reason` and stops reconnecting; see [`ReconnectingSender::close`].
    pub async fn close(&self, reason: CloseReason) -> Result<Option<CloseReason>, Error> {
        self.sender.close(reason).await
    }
}

impl futures_core::Stream for Reconnecting {
    type Item = Result<Message, Error>;
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut().incoming.poll_recv(cx)
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
            close_with: std::sync::Mutex::new(None),
            done: watch::Sender::new(None),
        });
        let sender = ReconnectingSender {
            tx,
            control: control.clone(),
            policy: config.while_disconnected,
            converter: self.converter(),
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
            result: Ok(None),
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
    outgoing: mpsc::Receiver<Out>,
    incoming: mpsc::Sender<Result<Message, Error>>,
    /// What was taken from the queue for a connection that dropped before it was done.
    pending: Option<Out>,
    /// What [`ReconnectingSender::close`] returns.
    result: Result<Option<CloseReason>, Error>,
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

    /// The reason the caller closed with, or a normal closure (every handle dropped).
    fn close_reason(&self) -> CloseReason {
        let c = self
            .control
            .close_with
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.clone().unwrap_or_else(CloseReason::normal)
    }

    async fn run(mut self) {
        self.connect_loop().await;
        self.control.stopped.store(true, Ordering::Release);
        self.control.connected.store(false, Ordering::Release);
        // Whoever waits in `close` or `flush` is answered.
        self.outgoing.close();
        drop(self.pending.take());
        while self.outgoing.try_recv().is_ok() {}
        let result = std::mem::replace(&mut self.result, Ok(None));
        self.control.done.send_replace(Some(result));
    }

    async fn connect_loop(&mut self) {
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
                    self.result = session.close(self.close_reason()).await;
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
    }

    /// Hands `out` to the connection; it stays pending if the connection could not take it.
    async fn hand_over(&mut self, tx: &Sender, out: Out) {
        match out {
            Out::Message(m) => {
                if tx.send(m.clone()).await.is_err() {
                    self.pending = Some(Out::Message(m));
                }
            }
            Out::Flush(reply) => match tx.flush().await {
                Ok(()) => {
                    let _ = reply.send(Ok(()));
                }
                // What was before it goes to the next connection: so does the flush.
                Err(_) => self.pending = Some(Out::Flush(reply)),
            },
        }
    }

    async fn pump(&mut self, session: crate::Session) -> Ended {
        let (tx, mut rx) = session.split();
        if let Some(out) = self.pending.take() {
            self.hand_over(&tx, out).await;
        }
        let stop = loop {
            tokio::select! {
                biased;
                _ = self.control.stop.notified() => break true,
                m = rx.recv() => match m {
                    Some(Ok(m)) => {
                        let _ = self.incoming.send(Ok(m)).await;
                    }
                    Some(Err(e)) => {
                        // The connection failed: the reader hears why, then the next one.
                        let _ = self.incoming.send(Err(e)).await;
                        break false;
                    }
                    None => break false,
                },
                out = self.outgoing.recv(), if self.pending.is_none() => match out {
                    Some(out) => self.hand_over(&tx, out).await,
                    // Every sender is gone: nothing more will be sent; close normally.
                    None => break true,
                },
            }
        };
        if stop || self.stopped() {
            // What was sent before the close goes out ahead of it.
            while self.pending.is_none()
                && let Ok(out) = self.outgoing.try_recv()
            {
                self.hand_over(&tx, out).await;
            }
            // Messages that arrive before the server's Close still reach the reader (those
            // that find its queue full are dropped: the session is ending).
            let close = tx.close(self.close_reason());
            tokio::pin!(close);
            let mut reading = true;
            self.result = loop {
                tokio::select! {
                    r = &mut close => break r,
                    m = rx.recv(), if reading => match m {
                        Some(Ok(m)) => {
                            let _ = self.incoming.try_send(Ok(m));
                        }
                        _ => reading = false,
                    },
                }
            };
            while reading && let Some(Ok(m)) = rx.recv().await {
                let _ = self.incoming.try_send(Ok(m));
            }
            self.emit(ConnectionEvent::Closed {
                reason: tx.try_close_reason(),
                error: self.result.as_ref().err().cloned(),
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
