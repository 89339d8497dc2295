//! Connection options shared by talking and benchmarking, named as curl names them (websocat's
//! names where curl has none).

use std::time::Duration;

use base64::Engine;
use clap::Args;
use wsc::{Client, DeflateConfig, RequestBuilder};

use crate::Failure;

#[derive(Args, Debug, Clone, Default)]
pub struct ConnectOpts {
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Offer a subprotocol (repeatable, in preference order).
    #[arg(long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    /// The Origin header.
    #[arg(long)]
    pub origin: Option<String>,
    /// Basic authentication, `user:password`.
    #[arg(short = 'u', long = "user", value_name = "USER:PASSWORD")]
    pub user: Option<String>,
    /// Bearer token authentication.
    #[arg(long = "oauth2-bearer", value_name = "TOKEN")]
    pub bearer: Option<String>,
    /// Send a keepalive ping this often (e.g. 20s, 500ms; default 20s).
    #[arg(long = "ping-interval", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_interval: Option<Duration>,
    /// Send no keepalive pings.
    #[arg(long = "no-ping", conflicts_with = "ping_interval")]
    pub no_ping: bool,
    /// Close with 1011 when a ping goes unanswered this long (default 20s).
    #[arg(long = "ping-timeout", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_timeout: Option<Duration>,
    /// Largest message (and frame) accepted, in bytes (default 64 MiB); a larger one closes
    /// the session with 1009 and exit code 6.
    #[arg(long = "max-message-size", value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Offer permessage-deflate compression (talk mode then runs a default session: control
    /// frames are handled by the library and not shown; not with --raw).
    #[arg(long = "compress")]
    pub compress: bool,
    /// Time allowed to connect and complete the handshake (e.g. 5s).
    #[arg(long = "connect-timeout", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Option<Duration>,
    /// Print the handshake request and response on stderr, and every control frame sent
    /// (`> ping …`) and received (`< pong …`).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Trust the CA certificates in this PEM file (besides the system's).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Accept any server certificate (development only: anyone on the path can read the traffic).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Tunnel through a proxy: http://[user:pass@]host:port, https://…, socks5://…, socks5h://…
    #[arg(short = 'x', long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Take proxies from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY.
    #[arg(long = "proxy-env")]
    pub proxy_env: bool,
}

/// Parses `500ms`, `5s`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 5s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The keepalive interval and ping timeout when neither flag is given.
const DEFAULT_PING: Duration = Duration::from_secs(20);

impl ConnectOpts {
    /// The keepalive in force: a ping every `.0`, failing after `.1` without its pong.
    pub fn keepalive(&self) -> Option<(Duration, Duration)> {
        if self.no_ping {
            return None;
        }
        let every = self.ping_interval.unwrap_or(DEFAULT_PING);
        (!every.is_zero()).then(|| (every, self.ping_timeout.unwrap_or(DEFAULT_PING)))
    }

    pub fn client(&self) -> Result<Client, Failure> {
        let mut b = Client::builder();
        if self.no_ping {
            b = b.ping_interval(None);
        } else if let Some(every) = self.ping_interval {
            b = b.ping_interval(Some(every));
        }
        if let Some(t) = self.ping_timeout {
            b = b.ping_timeout(t);
        }
        if let Some(m) = self.max_message_size {
            // A frame is never larger than the message it carries: one limit, the user's.
            b = b.max_message_size(m).max_frame_size(m);
        }
        if self.compress {
            b = b.deflate(DeflateConfig::default());
        }
        if let Some(t) = self.connect_timeout {
            b = b.connect_timeout(t).handshake_timeout(t);
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", p.display())))
        };
        if let Some(ca) = &self.cacert {
            b = b
                .tls_roots(wsc::Roots::PlatformAndBundled)
                .add_root_certificates_pem(&read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            b = b.client_certificate_pem(&read(cert)?, &read(key)?);
        }
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(p) = &self.proxy {
            b = b.proxy(wsc::Proxy::parse(p).map_err(|e| crate::failure(&e))?);
        } else if self.proxy_env {
            b = b.proxy_from_env();
        }
        b.build().map_err(|e| crate::failure(&e))
    }

    /// The request for `url` with these headers and subprotocols, for a reconnecting session
    /// (which makes its own requests from it).
    pub fn target(&self, url: &str) -> Result<wsc::Request, Failure> {
        let bad = |e: wsc::Error| crate::failure(&e);
        let mut r = wsc::Request::parse(url).map_err(bad)?;
        for h in &self.headers {
            let Some((name, value)) = h.split_once(':') else {
                return Err(Failure::new(
                    2,
                    format!("bad header {h:?}: expected `Name: value`"),
                ));
            };
            r = r.header(name.trim(), value.trim()).map_err(bad)?;
        }
        if let Some(o) = &self.origin {
            r = r.origin(o).map_err(bad)?;
        }
        if let Some(u) = &self.user {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            r = r.basic_auth(user, password).map_err(bad)?;
        }
        if let Some(t) = &self.bearer {
            r = r
                .header("Authorization", &format!("Bearer {t}"))
                .map_err(bad)?;
        }
        for p in &self.protocols {
            r = r.protocol(p).map_err(bad)?;
        }
        Ok(r)
    }

    pub fn request(&self, client: &Client, url: &str) -> Result<RequestBuilder, Failure> {
        let mut r = client.request(url);
        for h in &self.headers {
            let Some((name, value)) = h.split_once(':') else {
                return Err(Failure::new(
                    2,
                    format!("bad header {h:?}: expected `Name: value`"),
                ));
            };
            r = r.header(name.trim(), value.trim());
        }
        if let Some(o) = &self.origin {
            r = r.header("Origin", o);
        }
        if let Some(u) = &self.user {
            r = r.header(
                "Authorization",
                &format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(u)
                ),
            );
        }
        if let Some(t) = &self.bearer {
            r = r.bearer_auth(t);
        }
        Ok(r.protocols(self.protocols.iter().map(String::as_str)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
