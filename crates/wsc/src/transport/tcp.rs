//! TCP: every resolved address, IPv6 and IPv4 interleaved and raced with staggered starts
//! (Happy Eyeballs, RFC 8305 §5), `TCP_NODELAY` on, an optional local address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::error::{Error, IoContext};

/// RFC 8305 §5's recommended "Connection Attempt Delay".
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Resolves `host` and connects to the first address that answers.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    bind: Option<IpAddr>,
) -> Result<TcpStream, Error> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let resolving = || IoContext::Resolving {
        host: host.to_owned(),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::io(resolving(), e))?
        .filter(|a| bind.is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
        .collect();
    if addrs.is_empty() {
        let why = match bind {
            Some(b) if b.is_ipv4() => "no IPv4 address to match the local address",
            Some(_) => "no IPv6 address to match the local address",
            None => "no address",
        };
        return Err(Error::io(
            resolving(),
            io::Error::new(io::ErrorKind::NotFound, why),
        ));
    }
    let connected = match addrs[..] {
        // Nothing to race: connect in this task (no attempt task to allocate and free).
        [addr] => attempt(addr, bind).await.map_err(|e| (addr, e)),
        _ => race(interleave(addrs), bind).await,
    };
    let stream = connected.map_err(|(addr, e)| Error::io(IoContext::Connecting { addr }, e))?;
    let addr = stream.peer_addr().ok();
    crate::trace::debug!(addr = ?addr, "wsc: TCP connected");
    stream.set_nodelay(true).map_err(|e| match addr {
        Some(addr) => Error::io(IoContext::Connecting { addr }, e),
        None => Error::io(IoContext::Other, e),
    })?;
    Ok(stream)
}

/// IPv6 first, then alternating families (RFC 8305 §4).
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

async fn attempt(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// Starts an attempt, then another every 250 ms (or at once when one fails) until one connects;
/// if none does, the last failure and its address.
async fn race(
    addrs: Vec<SocketAddr>,
    bind: Option<IpAddr>,
) -> Result<TcpStream, (SocketAddr, io::Error)> {
    let mut running = JoinSet::new();
    let mut next = 0;
    let mut start_next = Instant::now();
    let mut last_error = None;
    loop {
        if next < addrs.len() && (running.is_empty() || Instant::now() >= start_next) {
            let addr = addrs[next];
            running.spawn(async move { attempt(addr, bind).await.map_err(|e| (addr, e)) });
            next += 1;
            start_next = Instant::now() + ATTEMPT_DELAY;
            continue;
        }
        if running.is_empty() {
            // With at least one address, every attempt ends in `last_error`.
            return Err(last_error.unwrap_or_else(|| {
                let none = SocketAddr::from(([0, 0, 0, 0], 0));
                let addr = addrs.first().copied().unwrap_or(none);
                (addr, io::Error::other("no address to try"))
            }));
        }
        tokio::select! {
            done = running.join_next() => match done {
                Some(Ok(Ok(stream))) => return Ok(stream),
                Some(Ok(Err(e))) => {
                    last_error = Some(e);
                    start_next = Instant::now();
                }
                Some(Err(e)) => last_error = Some((addrs[next - 1], io::Error::other(e))),
                None => {}
            },
            _ = sleep_until(start_next), if next < addrs.len() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_families_v6_first() {
        let a: Vec<SocketAddr> = ["1.1.1.1:1", "2.2.2.2:1", "[::1]:1", "[::2]:1", "3.3.3.3:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = interleave(a).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            got,
            ["[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "3.3.3.3:1"]
        );
    }

    #[tokio::test]
    async fn a_refused_address_falls_through_to_the_next() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = l.local_addr().unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap(); // closed at once
        let s = race(vec![dead, good], None).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), good);
        assert!(race(vec![dead], None).await.is_err());
    }

    #[tokio::test]
    async fn binds_the_local_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let s = connect("127.0.0.1", port, Some("127.0.0.3".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(s.local_addr().unwrap().ip().to_string(), "127.0.0.3");
        assert!(s.nodelay().unwrap());
    }
}
