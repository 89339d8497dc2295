//! Client configuration: the analog of Ktor's `install(WebSockets) { … }` block.
//!
//! Every setting has a documented default; limits are on by default. `build()` validates.

use std::net::IpAddr;
use std::sync::Arc;
#[cfg(feature = "cookies")]
use std::sync::Mutex;
use std::time::Duration;

use wsc_proto::ExtensionFactory;
use wsc_proto::deflate::DeflateConfig;

use crate::Client;
use crate::error::Error;
use crate::session::config::SessionConfig;
use crate::transport::TransportConfig;
#[cfg(feature = "proxy")]
use crate::transport::proxy::{EnvProxies, Proxy};
#[cfg(feature = "rustls")]
use crate::transport::tls::{Roots, certs_from_pem, key_from_pem};

/// Validated settings shared by every session a [`Client`] opens: how to reach the server
/// (`transport`), the handshake's, and the sessions' own (`session`, shared by reference).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub session: Arc<SessionConfig>,
    pub transport: TransportConfig,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub extensions: Vec<Arc<dyn ExtensionFactory>>,
    pub user_agent: Option<String>,
    pub max_redirects: usize,
    #[cfg(feature = "cookies")]
    pub cookies: Option<Arc<Mutex<cookie_store::CookieStore>>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session: Arc::default(),
            transport: TransportConfig::default(),
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(30),
            extensions: Vec::new(),
            user_agent: Some(concat!("wsc/", env!("CARGO_PKG_VERSION")).to_owned()),
            max_redirects: 10,
            #[cfg(feature = "cookies")]
            cookies: None,
        }
    }
}

/// Builds a [`Client`]. Obtain with [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// let client = wsc::Client::builder()
///     .max_frame_size(1 << 20)
///     .ping_interval(Some(Duration::from_secs(20)))
///     .ping_timeout(Duration::from_secs(10))
///     .deflate(wsc::DeflateConfig::default())
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct ClientBuilder {
    config: Config,
    /// The first invalid setting, reported by `build()`.
    error: Option<Error>,
}

impl ClientBuilder {
    fn session(&mut self) -> &mut SessionConfig {
        Arc::make_mut(&mut self.config.session)
    }

    /// Largest frame payload accepted from the peer; a larger one fails the session with 1009
    /// (RFC 6455 §7.4.1). Default 16 MiB; `usize::MAX` turns the check off.
    /// Ktor: `maxFrameSize`.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.session().max_frame_size = bytes;
        self
    }

    /// Largest message accepted, after reassembly and any inflation; a larger one fails the
    /// session with 1009. Default 64 MiB; `usize::MAX` turns the check off.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.session().max_message_size = bytes;
        self
    }

    /// Whether outgoing frames are masked. Default `true`, as RFC 6455 §5.3 requires of
    /// clients; turn off only for a server you know accepts unmasked frames. Ktor: `masking`.
    pub fn masking(mut self, on: bool) -> Self {
        self.session().masking = on;
        self
    }

    /// How often a default session pings the server to keep the connection alive
    /// (RFC 6455 §5.5.2). Default every 20 s, as Python `websockets` does: without it a
    /// server that dies or a network that stalls mid-frame leaves `recv()` waiting forever.
    /// `None` turns pinging off (Ktor's default), as `None` turns a setting off everywhere on
    /// this builder. Ktor: `pingInterval`.
    pub fn ping_interval(mut self, every: Option<Duration>) -> Self {
        self.session().ping_interval = every;
        self
    }

    /// How long a default session waits for the Pong that echoes its Ping before it closes
    /// with 1011 "Ping timeout" (RFC 6455 §7.4.1). Default 20 s, as Python `websockets`
    /// has it. It applies only while pinging is on ([`ping_interval`](Self::ping_interval));
    /// zero is refused by `build()`. Ktor: `timeoutMillis`.
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.session().ping_timeout = Some(timeout);
        self
    }

    /// How long a session waits for the peer's Close after sending its own, and then for the
    /// server to close TCP (RFC 6455 §7.1.1). Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.session().close_timeout = timeout;
        self
    }

    /// How long opening the TCP connection may take. Default 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long the opening handshake may take once connected. Default 30 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Bytes of encoded frames that may wait to be written before `send` waits
    /// (backpressure). A message larger than this is still accepted when the queue is empty.
    /// Default 1 MiB.
    pub fn outgoing_queue_capacity(mut self, bytes: usize) -> Self {
        self.session().outgoing_capacity = bytes;
        self
    }

    /// Messages (or frames, for raw sessions) that may wait to be received before the session
    /// stops reading from the socket (backpressure). Default 256.
    pub fn incoming_queue_capacity(mut self, messages: usize) -> Self {
        self.session().incoming_capacity = messages;
        self
    }

    /// Payload bytes that may wait to be received before the session stops reading (the
    /// other bound of the incoming queue; a single larger message still passes). Default 1 MiB.
    ///
    /// This also sets how many read buffers a busy session keeps for reuse (instead of
    /// allocating a new one every 64 KiB while received messages still hold the last): as
    /// many 64 KiB buffers as this many bytes make (256 KiB ones while frames of 16–128 KiB
    /// arrive), at least one and at most 16; one is added only when the application lags
    /// behind the reads, and all are given back after a quiet second.
    pub fn incoming_queue_bytes(mut self, bytes: usize) -> Self {
        self.session().incoming_bytes = bytes;
        self
    }

    /// Splits outgoing messages larger than `bytes` into fragments of that size. Default: off
    /// (one frame per message).
    pub fn write_fragment_size(mut self, bytes: Option<usize>) -> Self {
        self.session().write_fragment_size = bytes;
        self
    }

    /// Installs permessage-deflate (RFC 7692) with `config`. Ktor:
    /// `extensions { install(WebSocketDeflateExtension) { … } }`.
    pub fn deflate(self, config: DeflateConfig) -> Self {
        self.extension(config)
    }

    /// Installs an extension; offered in the order installed.
    pub fn extension(mut self, factory: impl ExtensionFactory + 'static) -> Self {
        self.config.extensions.push(Arc::new(factory));
        self
    }

    /// The `User-Agent` header sent with the handshake. Default `wsc/<version>`; `None` sends none.
    pub fn user_agent(mut self, ua: Option<String>) -> Self {
        self.config.user_agent = ua;
        self
    }

    /// The content converter for `send_serialized` and `receive_deserialized` (Ktor's
    /// `contentConverter`); e.g. [`Json`](crate::convert::Json). Default: none.
    pub fn converter(mut self, converter: impl crate::convert::Converter + 'static) -> Self {
        self.session().converter = Some(Arc::new(converter));
        self
    }

    /// Delivers incoming messages in pieces as they arrive instead of reassembling them, so a
    /// message of any size passes with memory bounded by a few pieces, however the server
    /// frames it: a frame is one piece, and a frame larger than 64 KiB (or than
    /// `max_frame_size`, if smaller) comes in pieces of that size, each handed out as soon as
    /// it has arrived, so `max_frame_size` no longer refuses frames. Read them with
    /// [`Session::recv_stream`](crate::Session::recv_stream) (`recv()` still reassembles,
    /// within `max_message_size`). Default off.
    pub fn stream_incoming(mut self, on: bool) -> Self {
        self.session().stream_incoming = on;
        self
    }

    /// Which roots verify servers' certificates: the platform's (default), bundled Mozilla
    /// roots, both, or none (only added CAs).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_roots(mut self, roots: Roots) -> Self {
        self.config.transport.tls_settings.roots = roots;
        self
    }

    /// Also trusts the CA certificates in `pem`.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Self {
        match certs_from_pem(pem) {
            Ok(c) => self.config.transport.tls_settings.extra_roots.extend(c),
            Err(e) => self.error = self.error.or(Some(e)),
        }
        self
    }

    /// Presents this client certificate chain and key (PEM) to servers that ask (mutual TLS).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn client_certificate_pem(mut self, chain_pem: &[u8], key_pem: &[u8]) -> Self {
        match (certs_from_pem(chain_pem), key_from_pem(key_pem)) {
            (Ok(chain), Ok(key)) => {
                self.config.transport.tls_settings.client_cert = Some((chain, Arc::new(key)))
            }
            (Err(e), _) | (_, Err(e)) => self.error = self.error.or(Some(e)),
        }
        self
    }

    /// **Development only**: accepts any server certificate, so anyone on the path can read
    /// and change the traffic. Off by default.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.config
            .transport
            .tls_settings
            .danger_accept_invalid_certs = accept;
        self
    }

    /// Uses a ready rustls configuration for `wss` instead of the settings above.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.config.transport.tls_settings.custom = Some(config);
        self
    }

    /// Tunnels every connection through `proxy` (see [`Proxy::parse`]).
    #[cfg(feature = "proxy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.config.transport.proxy = Some(proxy);
        self
    }

    /// Takes proxies from `HTTPS_PROXY` (wss), `HTTP_PROXY` (ws), `ALL_PROXY` and `NO_PROXY`
    /// (upper or lower case), read when the client is built. An explicit [`proxy`](Self::proxy)
    /// wins.
    #[cfg(feature = "proxy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
    pub fn proxy_from_env(self) -> Self {
        self.proxy_from_env_with(|k| std::env::var(k).ok())
    }

    /// As [`proxy_from_env`](Self::proxy_from_env), reading the variables through `lookup`.
    #[cfg(feature = "proxy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
    pub fn proxy_from_env_with(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        match EnvProxies::read(lookup) {
            Ok(e) => self.config.transport.env_proxies = Some(e),
            Err(e) => self.error = self.error.or(Some(e)),
        }
        self
    }

    /// Connects from this local address.
    pub fn bind(mut self, local: IpAddr) -> Self {
        self.config.transport.bind = Some(local);
        self
    }

    /// Follows at most this many redirects (301, 302, 303, 307, 308) in a handshake; 0 turns
    /// following off. Default 10. `http`/`https` Locations map to `ws`/`wss`; a redirect from
    /// `wss` to `ws` is refused, and `Authorization` is not sent to another host.
    pub fn max_redirects(mut self, n: usize) -> Self {
        self.config.max_redirects = n;
        self
    }

    /// Keeps cookies set by handshake responses (the 101 or a redirect) and sends them on later
    /// handshakes of this client's sessions (RFC 6265). Default off.
    #[cfg(feature = "cookies")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cookies")))]
    pub fn cookies(mut self, on: bool) -> Self {
        self.config.cookies =
            on.then(|| Arc::new(Mutex::new(cookie_store::CookieStore::default())));
        self
    }

    /// Validates the settings and builds the client.
    pub fn build(mut self) -> Result<Client, Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // Each client gets its own lazily built TLS configuration (a cloned builder must not
        // share one built from other settings).
        #[cfg(feature = "rustls")]
        {
            let t = &mut self.config.transport;
            t.tls = Arc::default();
            if t.tls_settings.custom.is_some() || t.tls_settings.danger_accept_invalid_certs {
                // Nothing to read from the system: build now so setting errors surface here.
                let built = t.tls_settings.build();
                built.clone()?;
                let _ = t.tls.set(built);
            }
        }
        if let Some(ua) = &self.config.user_agent {
            wsc_proto::handshake::check_header("User-Agent", ua).map_err(Error::InvalidConfig)?;
        }
        let c = &self.config.session;
        if c.max_frame_size == 0 || c.max_message_size == 0 {
            return Err(Error::InvalidConfig(
                "size limits must be at least 1 byte".into(),
            ));
        }
        if c.incoming_capacity == 0 || c.outgoing_capacity == 0 || c.incoming_bytes == 0 {
            return Err(Error::InvalidConfig(
                "queue capacities must be at least 1".into(),
            ));
        }
        if c.ping_interval == Some(Duration::ZERO) || c.ping_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidConfig(
                "ping interval and timeout must be positive (ping_interval(None) turns pinging off)"
                    .into(),
            ));
        }
        if c.write_fragment_size == Some(0) {
            return Err(Error::InvalidConfig(
                "fragment size must be at least 1 byte".into(),
            ));
        }
        let mut rsv = 0u8;
        for f in &self.config.extensions {
            if f.rsv() & rsv != 0 {
                return Err(Error::InvalidConfig(format!(
                    "extension {} claims an RSV bit another extension already uses",
                    f.name()
                )));
            }
            rsv |= f.rsv();
        }
        Ok(Client::from_config(self.config))
    }
}
