//! The retry policy: what ended a connection ([`Disconnect`]), the decision ([`Retry`]) and
//! the default rules, with `Retry-After` (RFC 9110 §10.2.3) read here. Pure functions: the
//! clock is passed in, so the rules are tested without waiting.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use wsc_proto::{CloseCode, CloseReason};

use crate::error::Error;

/// What ended a connection or an attempt, as a retry policy sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Disconnect<'a> {
    /// An attempt did not open: the handshake was refused ([`Error::HandshakeRefused`]), the
    /// network or TLS failed, a timeout passed, or the on-connect hook failed.
    Connect(&'a Error),
    /// An open connection failed: the network, a ping timeout, a protocol violation or a
    /// limit this client detected.
    Failed(&'a Error),
    /// The server closed an open connection with this reason (an empty Close reads as 1000).
    Closed(&'a CloseReason),
}

impl Disconnect<'_> {
    /// The HTTP status of a refused handshake.
    pub fn status(&self) -> Option<u16> {
        match self {
            Disconnect::Connect(Error::HandshakeRefused { status, .. }) => Some(status.as_u16()),
            _ => None,
        }
    }

    /// The code of the server's Close.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Disconnect::Closed(r) => Some(r.code()),
            _ => None,
        }
    }

    /// The error the session ends with if the policy says [`Retry::Stop`].
    pub fn to_error(&self) -> Error {
        match self {
            Disconnect::Connect(e) | Disconnect::Failed(e) => (*e).clone(),
            Disconnect::Closed(r) => Error::Closed(Some((*r).clone())),
        }
    }
}

/// A retry policy's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// Try again after the backoff (exponential, with jitter if configured).
    Backoff,
    /// Try again after this long (capped by the configured `max_delay`); for a server's
    /// `Retry-After`.
    After(Duration),
    /// End the session with the error that ended the connection: it is the last item of
    /// `recv()`, and sends fail with it.
    Stop,
}

/// Server closes that say the client is at fault in a way another connection will repeat.
const FINAL_CLOSE_CODES: [CloseCode; 6] = [
    CloseCode::PROTOCOL_ERROR,
    CloseCode::CANNOT_ACCEPT,
    CloseCode::NOT_CONSISTENT,
    CloseCode::VIOLATED_POLICY,
    CloseCode::TOO_BIG,
    CloseCode::NO_EXTENSION,
];

/// The rules of [`ReconnectConfig::default_retry`](crate::ReconnectConfig::default_retry),
/// with `now` for an HTTP-date `Retry-After`.
pub(super) fn default_retry(ended: &Disconnect<'_>, now: SystemTime) -> Retry {
    match ended {
        Disconnect::Connect(Error::HandshakeRefused {
            status, headers, ..
        }) => {
            if *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::SERVICE_UNAVAILABLE
            {
                return retry_after(headers, now).map_or(Retry::Backoff, Retry::After);
            }
            if status.is_client_error() && *status != StatusCode::REQUEST_TIMEOUT {
                return Retry::Stop;
            }
            Retry::Backoff
        }
        Disconnect::Connect(Error::InvalidUrl { .. } | Error::InvalidConfig(_)) => Retry::Stop,
        Disconnect::Closed(r) if FINAL_CLOSE_CODES.contains(&r.code()) => Retry::Stop,
        _ => Retry::Backoff,
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds, or an HTTP date (a date in the
/// past is no wait). `None` when absent or unreadable.
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // A number too long for u64 is still "a long time".
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 §5.6.7 requires
/// senders to use. The obsolete forms are not read (the header is then ignored).
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.get(5..)?; // "Sun, "
    let b = rest.as_bytes();
    if s.as_bytes().get(3) != Some(&b',') || b.len() != 24 || &rest[20..] != " GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = rest.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let day = num(0..2)?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| rest.get(3..6) == Some(*m))? as u64 + 1;
    let year = num(7..11)?;
    let (h, m, sec) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if b[2] != b' ' || b[6] != b' ' || b[11] != b' ' || b[14] != b':' || b[17] != b':' {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil, for years ≥ 1970).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, retry_after: Option<&str>) -> Error {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        }
        Error::HandshakeRefused {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Box::new(headers),
            body: bytes::Bytes::new(),
        }
    }

    fn decide(e: &Error) -> Retry {
        default_retry(&Disconnect::Connect(e), SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn client_errors_stop_except_408_and_429() {
        for s in [400, 401, 403, 404, 410, 426] {
            assert_eq!(decide(&refused(s, None)), Retry::Stop, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(decide(&refused(s, None)), Retry::Backoff, "{s}");
        }
        assert_eq!(
            decide(&Error::InvalidConfig("bad header".into())),
            Retry::Stop
        );
        assert_eq!(
            decide(&Error::Timeout(crate::TimeoutKind::Connect)),
            Retry::Backoff
        );
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        assert_eq!(
            decide(&refused(429, Some("7"))),
            Retry::After(Duration::from_secs(7))
        );
        assert_eq!(
            decide(&refused(503, Some(" 2 "))),
            Retry::After(Duration::from_secs(2))
        );
        assert_eq!(decide(&refused(500, Some("7"))), Retry::Backoff);
        assert_eq!(decide(&refused(403, Some("7"))), Retry::Stop);
        assert_eq!(decide(&refused(503, Some("soon"))), Retry::Backoff);
        assert_eq!(decide(&refused(503, Some("-1"))), Retry::Backoff);
    }

    #[test]
    fn retry_after_reads_an_http_date_against_now() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(&h, at), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&h, at - Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_835_481_599))
        );
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 36 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 28:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT ",
            "",
            "é",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_closes_that_another_connection_would_repeat_stop() {
        for code in 1000u16..=1015 {
            let r = CloseReason::new(code, "").unwrap_or_else(|_| CloseReason::normal());
            let want = if [1002, 1003, 1007, 1008, 1009, 1010].contains(&r.code().as_u16()) {
                Retry::Stop
            } else {
                Retry::Backoff
            };
            assert_eq!(
                default_retry(&Disconnect::Closed(&r), SystemTime::UNIX_EPOCH),
                want,
                "{code}"
            );
        }
        // Failures this client detected are retried: the next connection may not repeat them.
        let e = Error::Closed(None);
        assert_eq!(
            default_retry(&Disconnect::Failed(&e), SystemTime::UNIX_EPOCH),
            Retry::Backoff
        );
    }
}
