//! The client (Ktor's `HttpClient` with the WebSockets plugin) and its per-request builder.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use wsc_proto::{CloseCode, CloseReason};

use crate::config::{ClientBuilder, Config};
use crate::connect;
use crate::error::Error;
use crate::request::{IntoRequest, Request};
use crate::session::{self, RawSession, Session, Shared};
use tokio::io::{AsyncRead, AsyncWrite};

/// A WebSocket client: configuration set once, shared by every session it opens. Cheap to
/// clone (an `Arc` inside).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsc::Error> {
/// let client = wsc::Client::new();
/// // Scoped: the session is closed when the closure returns (1000) or fails (1011).
/// let echoed = client
///     .websocket("ws://127.0.0.1:9001/", async |s: &mut wsc::Session| {
///         s.send("hi").await?;
///         Ok::<_, wsc::Error>(s.recv().await.transpose()?)
///     })
///     .await?;
/// // Manual: the caller closes.
/// let session = client.request("ws://127.0.0.1:9001/").header("Authorization", "Bearer t").protocol("chat").connect().await?;
/// session.close(wsc::CloseReason::normal()).await?;
/// # let _ = echoed; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    config: Arc<Config>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client with every default (see [`ClientBuilder`]).
    pub fn new() -> Client {
        Client {
            config: Arc::new(Config::default()),
        }
    }

    /// A builder for a configured client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The content converter sessions of this client use, if one is configured.
    pub(crate) fn converter(&self) -> Option<Arc<dyn crate::convert::Converter>> {
        self.config.session.converter.clone()
    }

    /// The settings every session of this client starts with.
    pub(crate) fn session_config(&self) -> &crate::session::SessionConfig {
        &self.config.session
    }

    pub(crate) fn from_config(config: Config) -> Client {
        Client {
            config: Arc::new(config),
        }
    }

    /// A request to refine (headers, query, subprotocols, timeout) before connecting.
    pub fn request(&self, target: impl IntoRequest) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            request: target.into_request(),
        }
    }

    /// A `ws://host:port/path` request (Ktor's `ws(host, port, path)`).
    pub fn ws(&self, host: &str, port: u16, path: &str) -> RequestBuilder {
        self.request(Request::ws(host, port, path))
    }

    /// A `wss://host:port/path` request (Ktor's `wss(host, port, path)`).
    pub fn wss(&self, host: &str, port: u16, path: &str) -> RequestBuilder {
        self.request(Request::wss(host, port, path))
    }

    /// Connects and returns a default session; the caller must close it
    /// (Ktor's `webSocketSession`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`RequestBuilder::connect`].
    pub async fn connect(&self, target: impl IntoRequest) -> Result<Session, Error> {
        self.request(target).connect().await
    }

    /// Connects and returns a raw session (Ktor's `webSocketRawSession`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`RequestBuilder::connect`].
    pub async fn connect_raw(&self, target: impl IntoRequest) -> Result<RawSession, Error> {
        self.request(target).connect_raw().await
    }

    /// Connects, runs `f` with the session, and always closes it afterwards: 1000 when `f`
    /// returns `Ok`, 1011 with the error's text when it returns `Err` or panics (the panic is
    /// then resumed). Returns `f`'s value (Ktor's `webSocket { … }`).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops `f` wherever it stood and, unless `f` kept a
    /// [`Sender`](crate::Sender) elsewhere, the session with it, which then closes normally
    /// (1000) in the background after what was already sent, not with the 1011 an error or
    /// panic would give. Whatever `f` was doing is cut short as dropping its own future would
    /// cut it; see the cancel safety of the methods it awaits.
    pub async fn websocket<T, E, F>(&self, target: impl IntoRequest, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error> + Display,
    {
        self.request(target).websocket(f).await
    }

    /// As [`Client::websocket`], with a raw session (Ktor's `webSocketRaw { … }`).
    ///
    /// # Cancel safety
    ///
    /// As [`Client::websocket`].
    pub async fn websocket_raw<T, E, F>(&self, target: impl IntoRequest, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut RawSession) -> Result<T, E>,
        E: From<Error> + Display,
    {
        self.request(target).websocket_raw(f).await
    }
}

/// One connection's request, built from a [`Client`]. Errors in any step are reported when
/// connecting, before any I/O.
#[must_use]
#[derive(Debug)]
pub struct RequestBuilder {
    client: Client,
    request: Result<Request, Error>,
}

impl RequestBuilder {
    pub(crate) fn from_parts(client: Client, request: Request) -> Self {
        RequestBuilder {
            client,
            request: Ok(request),
        }
    }

    fn map(mut self, f: impl FnOnce(Request) -> Result<Request, Error>) -> Self {
        self.request = self.request.and_then(f);
        self
    }

    /// Adds a header (the handshake's own headers are refused).
    pub fn header(self, name: &str, value: &str) -> Self {
        self.map(|r| r.header(name, value))
    }

    /// Lets a redirect to another origin carry header `name`; see
    /// [`Request::forward_on_redirect`].
    pub fn forward_on_redirect(self, name: &str) -> Self {
        self.map(|r| Ok(r.forward_on_redirect(name)))
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// Adds `Authorization: Basic …`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        self.map(|r| r.basic_auth(user, password))
    }

    /// Sets the `Origin` header.
    pub fn origin(self, origin: &str) -> Self {
        self.map(|r| r.origin(origin))
    }

    /// Adds a query parameter.
    pub fn query(self, name: &str, value: &str) -> Self {
        self.map(|r| Ok(r.query(name, value)))
    }

    /// Offers a subprotocol; call again for more, in preference order.
    pub fn protocol(self, name: &str) -> Self {
        self.map(|r| r.protocol(name))
    }

    /// Offers several subprotocols, in preference order.
    pub fn protocols<'a>(self, names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().fold(self, |b, n| b.protocol(n))
    }

    /// Bounds connect and handshake together.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|r| Ok(r.timeout(timeout)))
    }

    async fn open<D: session::Delivery>(self) -> Result<session::Session<D>, Error> {
        let request = self.request?;
        let config = &self.client.config;
        let up = connect::open(config, &request, D::RAW).await?;
        let shared = Shared::new(
            config.session.clone(),
            up.extensions,
            wsc_proto::Role::Client,
            up.call,
        );
        Ok(session::start(up.io, shared, up.leftover, up.extensions_in))
    }

    /// Connects and returns a default session.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future abandons the attempt: the connection it opened, if
    /// any, is dropped before a session exists (a session is made and its driver started in
    /// the poll that returns it), so nothing else is affected and a new attempt may start at
    /// once. Cookies a response already set stay in the client's jar.
    pub async fn connect(self) -> Result<Session, Error> {
        self.open().await
    }

    async fn open_on<D: session::Delivery, S>(self, io: S) -> Result<session::Session<D>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let request = self.request?;
        let config = &self.client.config;
        let up = connect::open_on(config, &request, D::RAW, Box::new(io)).await?;
        let shared = Shared::new(
            config.session.clone(),
            up.extensions,
            wsc_proto::Role::Client,
            up.call,
        );
        Ok(session::start(up.io, shared, up.leftover, up.extensions_in))
    }

    /// Runs the handshake over `io`, a stream you opened yourself (a Unix socket, an
    /// in-memory duplex, your own TLS stack, a tunnel), and returns a default session: the
    /// client's limits, extensions, keepalive and call context apply as with
    /// [`connect`](Self::connect); wsc's own connecting, proxy and TLS do not, and a redirect
    /// is an error. The URL still gives the `Host` header and the request target.
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsc::Error> {
    /// let (ours, theirs) = tokio::io::duplex(64 * 1024);
    /// tokio::spawn(async move {
    ///     let mut s = wsc::server::accept(theirs, &Default::default()).await?;
    ///     while let Some(Ok(m)) = s.recv().await {
    ///         s.send(m).await?;
    ///     }
    ///     Ok::<_, wsc::Error>(())
    /// });
    /// let mut session = wsc::Client::new().request("ws://in-memory/echo").connect_on(ours).await?;
    /// session.send("hi").await?;
    /// assert_eq!(session.recv().await.unwrap()?, wsc::Message::text("hi"));
    /// session.close(wsc::CloseReason::normal()).await?;
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the handshake and drops `io` with it (it was moved in),
    /// before any session exists; whatever of the handshake was already exchanged over `io`
    /// cannot be taken back, so the stream is not reusable.
    pub async fn connect_on<S>(self, io: S) -> Result<Session, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.open_on(io).await
    }

    /// [`connect_on`](Self::connect_on) for a raw session.
    ///
    /// # Cancel safety
    ///
    /// As [`connect_on`](Self::connect_on).
    pub async fn connect_raw_on<S>(self, io: S) -> Result<RawSession, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.open_on(io).await
    }

    /// Connects and returns a raw session (no extensions are offered).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`connect`](Self::connect).
    pub async fn connect_raw(self) -> Result<RawSession, Error> {
        self.open().await
    }

    /// Connects, runs `f`, always closes; see [`Client::websocket`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::websocket`].
    pub async fn websocket<T, E, F>(self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error> + Display,
    {
        let mut session = self.connect().await?;
        let outcome = CatchUnwind(Box::pin(f(&mut session))).await;
        finish(&session.sender(), outcome).await
    }

    /// Connects raw, runs `f`, always closes; see [`Client::websocket_raw`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::websocket`].
    pub async fn websocket_raw<T, E, F>(self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut RawSession) -> Result<T, E>,
        E: From<Error> + Display,
    {
        let mut session = self.connect_raw().await?;
        let outcome = CatchUnwind(Box::pin(f(&mut session))).await;
        finish(&session.sender(), outcome).await
    }
}

type Panic = Box<dyn std::any::Any + Send>;

async fn finish<T, E: Display>(
    sender: &session::Sender,
    outcome: Result<Result<T, E>, Panic>,
) -> Result<T, E> {
    match outcome {
        Ok(Ok(v)) => {
            let _ = sender.close(CloseReason::normal()).await;
            Ok(v)
        }
        Ok(Err(e)) => {
            let _ = sender
                .close(CloseReason::truncated(
                    CloseCode::INTERNAL_ERROR,
                    &e.to_string(),
                ))
                .await;
            Err(e)
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            let _ = sender
                .close(CloseReason::truncated(CloseCode::INTERNAL_ERROR, &text))
                .await;
            std::panic::resume_unwind(panic)
        }
    }
}

/// Polls a future, turning a panic inside it into an `Err`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Panic>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}
