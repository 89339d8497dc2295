//! The crate's tracing: macros that are `tracing`'s own with the `tracing` feature and expand to
//! nothing without it (no argument is evaluated, nothing is linked), and the event for a
//! session's end.
//!
//! Only the connection's life goes through here (connecting, TLS, the handshake, the end,
//! reconnecting); nothing on the per-message path, which must cost the same with tracing
//! compiled in.

#![allow(unused_macros)]

#[cfg(feature = "tracing")]
macro_rules! debug {
    ($($t:tt)*) => { ::tracing::debug!($($t)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! debug {
    ($($t:tt)*) => {};
}

#[cfg(feature = "tracing")]
macro_rules! info {
    ($($t:tt)*) => { ::tracing::info!($($t)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! info {
    ($($t:tt)*) => {};
}

#[cfg(feature = "tracing")]
macro_rules! warning {
    ($($t:tt)*) => { ::tracing::warn!($($t)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! warning {
    ($($t:tt)*) => {};
}

/// `in_span!(future, span args…)`: the future inside a debug span with those fields; the
/// future itself without the feature.
#[cfg(feature = "tracing")]
macro_rules! in_span {
    ($fut:expr, $($span:tt)*) => {
        ::tracing::Instrument::instrument($fut, ::tracing::debug_span!($($span)*))
    };
}
#[cfg(not(feature = "tracing"))]
macro_rules! in_span {
    ($fut:expr, $($span:tt)*) => {
        $fut
    };
}

// Not every build uses every macro (the feature set decides which calls exist).
#[allow(unused_imports)]
pub(crate) use {debug, in_span, info, warning};

/// The one event for a session's end, where the driver publishes its outcome: who closed,
/// the close code and reason, and for a failure its cause (a ping timeout and a protocol
/// violation with the code sent are warnings).
#[cfg(feature = "tracing")]
pub(crate) fn session_ended(
    close: &wsc_proto::CloseReason,
    peer: Option<&wsc_proto::CloseReason>,
    result: &Result<(), crate::Error>,
) {
    use crate::error::{Chain, Error, TimeoutKind};
    // `code`/`reason`: the peer's if it closed first, ours if we did, the failure's otherwise;
    // `peer_code`: the code of the peer's Close, if one came (none: the peer never closed).
    let code = close.code().as_u16();
    let reason = close.reason();
    let peer_code = peer.map(|p| p.code().as_u16());
    match result {
        Ok(()) => tracing::info!(code, reason, peer_code, "wsc: session closed"),
        Err(Error::Timeout(TimeoutKind::Ping)) => {
            tracing::warn!(code, reason, "wsc: ping timeout, session failed")
        }
        Err(e @ Error::Protocol { code: sent, .. }) => tracing::warn!(
            code = sent.as_u16(),
            error = %Chain(e),
            "wsc: protocol violation by the peer"
        ),
        Err(e) => tracing::info!(code, reason, peer_code, error = %Chain(e), "wsc: session failed"),
    }
}
