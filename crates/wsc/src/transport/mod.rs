//! Byte transports under the WebSocket: TCP, TLS, proxies. Nothing here knows WebSocket.
//!
//! `connect` turns a target (host, port, TLS or not) into one boxed stream: TCP straight or
//! through a proxy (HTTP CONNECT, over TLS too, or SOCKS5), then TLS for `wss`.

#[cfg(feature = "proxy")]
pub(crate) mod proxy;
pub(crate) mod tcp;
#[cfg(feature = "rustls")]
pub(crate) mod tls;

use std::net::IpAddr;
#[cfg(feature = "rustls")]
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::error::{Error, TimeoutKind};
#[cfg(feature = "proxy")]
use proxy::{EnvProxies, Proxy};
#[cfg(feature = "rustls")]
use tls::TlsSettings;

/// How connections are opened: TLS, proxies, the local address.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransportConfig {
    #[cfg(feature = "rustls")]
    pub tls_settings: TlsSettings,
    /// Built from `tls_settings` on the first `wss` connect (reading the platform's roots
    /// costs milliseconds that ws-only clients need not pay).
    #[cfg(feature = "rustls")]
    pub tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, Error>>>,
    #[cfg(feature = "proxy")]
    pub proxy: Option<Proxy>,
    #[cfg(feature = "proxy")]
    pub env_proxies: Option<EnvProxies>,
    pub bind: Option<IpAddr>,
}

impl TransportConfig {
    /// The rustls configuration, built once per client on first use.
    #[cfg(feature = "rustls")]
    pub(crate) fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        self.tls.get_or_init(|| self.tls_settings.build()).clone()
    }

    /// The proxy for a target: the builder's, else the environment's when asked for.
    #[cfg(feature = "proxy")]
    pub(crate) fn proxy_for(&self, target: &Target<'_>) -> Option<Proxy> {
        if let Some(p) = &self.proxy {
            return Some(p.clone());
        }
        self.env_proxies
            .as_ref()
            .and_then(|e| e.for_target(target.host, target.tls))
            .cloned()
    }
}

/// A bidirectional byte stream a session can run on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The boxed stream sessions run on: one virtual call per read or write syscall, not per frame.
pub(crate) type BoxIo = Box<dyn Io>;

/// Where to connect.
pub(crate) struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: bool,
}

/// The words of the error for TLS wanted (a `wss` URL, an `https` proxy) in a build
/// without the `rustls` feature; names the feature so the fix is plain.
#[cfg(not(feature = "rustls"))]
pub(crate) const TLS_NEEDS_FEATURE: &str = "wss:// needs the `rustls` feature of wsc";

/// Runs TLS for `host` over `io`, or says which feature it needs.
pub(crate) async fn tls_connect(
    config: &TransportConfig,
    host: &str,
    io: BoxIo,
) -> Result<BoxIo, Error> {
    #[cfg(feature = "rustls")]
    {
        tls::connect(config, host, io).await
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = (config, io);
        Err(Error::InvalidConfig(format!(
            "TLS to {host}: {TLS_NEEDS_FEATURE}"
        )))
    }
}

/// Opens a stream to `target`, through a proxy if one applies, with TLS for `wss`; the whole
/// of it bounded by `deadline` (a connect timeout).
pub(crate) async fn connect(
    config: &TransportConfig,
    target: &Target<'_>,
    deadline: Instant,
) -> Result<BoxIo, Error> {
    #[cfg(feature = "proxy")]
    let proxy = config.proxy_for(target);
    #[cfg(feature = "proxy")]
    crate::trace::debug!(
        host = target.host,
        port = target.port,
        tls = target.tls,
        proxy = ?proxy,
        "wsc: connecting"
    );
    #[cfg(not(feature = "proxy"))]
    crate::trace::debug!(
        host = target.host,
        port = target.port,
        tls = target.tls,
        "wsc: connecting"
    );
    let work = async {
        #[cfg(feature = "proxy")]
        let io: BoxIo = match &proxy {
            Some(p) => p.connect(config, target).await?,
            None => Box::new(tcp::connect(target.host, target.port, config.bind).await?),
        };
        #[cfg(not(feature = "proxy"))]
        let io: BoxIo = Box::new(tcp::connect(target.host, target.port, config.bind).await?);
        if target.tls {
            tls_connect(config, target.host, io).await
        } else {
            Ok(io)
        }
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(TimeoutKind::Connect)),
    }
}
