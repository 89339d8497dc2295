//! Byte transports under the WebSocket: TCP, TLS, proxies. Nothing here knows WebSocket.
//!
//! `connect` turns a target (host, port, TLS or not) into one boxed stream: TCP straight or
//! through a proxy (HTTP CONNECT, over TLS too, or SOCKS5), then TLS for `wss`.

pub(crate) mod proxy;
pub(crate) mod tcp;
pub(crate) mod tls;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::error::{Error, TimeoutKind};
use proxy::{EnvProxies, Proxy};
use tls::TlsSettings;

/// How connections are opened: TLS, proxies, the local address.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransportConfig {
    pub tls_settings: TlsSettings,
    /// Built from `tls_settings` on the first `wss` connect (reading the platform's roots
    /// costs milliseconds that ws-only clients need not pay).
    pub tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, Error>>>,
    pub proxy: Option<Proxy>,
    pub env_proxies: Option<EnvProxies>,
    pub bind: Option<IpAddr>,
}

impl TransportConfig {
    /// The rustls configuration, built once per client on first use.
    pub(crate) fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        self.tls.get_or_init(|| self.tls_settings.build()).clone()
    }

    /// The proxy for a target: the builder's, else the environment's when asked for.
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

/// Opens a stream to `target`, through a proxy if one applies, with TLS for `wss`; the whole
/// of it bounded by `deadline` (a connect timeout).
pub(crate) async fn connect(
    config: &TransportConfig,
    target: &Target<'_>,
    deadline: Instant,
) -> Result<BoxIo, Error> {
    let proxy = config.proxy_for(target);
    let work = async {
        let io: BoxIo = match &proxy {
            Some(p) => p.connect(config, target).await?,
            None => Box::new(tcp::connect(target.host, target.port, config.bind).await?),
        };
        if target.tls {
            tls::connect(config, target.host, io).await
        } else {
            Ok(io)
        }
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(TimeoutKind::Connect)),
    }
}
