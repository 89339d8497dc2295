//! What a reconnecting session is configured with: the backoff schedule's numbers, the queue
//! for sends while disconnected, the on-connect hook and the retry policy. Data only: the
//! supervisor reads it, nothing here runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::policy::{Disconnect, Retry};
use crate::error::Error;
use crate::session::Sender;

/// The hook run after every successful (re)connect, before queued messages go out: to
/// authenticate or resubscribe. An error closes that connection with 1011 and counts as a
/// failed attempt.
pub type OnConnect =
    Arc<dyn Fn(Sender) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

/// The retry policy: given what ended a connection or an attempt, whether (and when) to try
/// again. See [`ReconnectConfig::retry_policy`].
pub type RetryPolicy = Arc<dyn Fn(&Disconnect<'_>) -> Retry + Send + Sync>;

/// What to do with sends while disconnected.
///
/// While connected, a send waits while the session's queue holds the client's
/// [`outgoing_queue_capacity`](crate::ClientBuilder::outgoing_queue_capacity) in bytes or
/// more, as a [`Session`](crate::Session)'s send does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhileDisconnected {
    /// Queue up to this many bytes of messages (a single larger message is still queued when
    /// the queue is empty); a send beyond it fails with [`Error::QueueFull`]. Queued messages
    /// go out in order after the next connect.
    Queue(usize),
    /// Fail sends (and flushes) at once with [`Error::Disconnected`].
    Reject,
}

/// Backoff, queueing and retry policy for a [`Reconnecting`](crate::Reconnecting) session.
///
/// ```
/// use std::time::Duration;
/// use wsc::{ReconnectConfig, Retry, WhileDisconnected};
///
/// let cfg = ReconnectConfig::default()
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(Some(8))
///     .while_disconnected(WhileDisconnected::Queue(1 << 20))
///     .on_connect(|sender| async move { sender.send("subscribe:prices").await })
///     // Also give up on 401, whatever the default says about the rest.
///     .retry_policy(|ended| match ended.status() {
///         Some(401) => Retry::Stop,
///         _ => ReconnectConfig::default_retry(ended),
///     });
/// # let _ = cfg;
/// ```
#[derive(Clone)]
pub struct ReconnectConfig {
    pub(super) initial_delay: Duration,
    pub(super) max_delay: Duration,
    pub(super) max_attempts: Option<u32>,
    pub(super) jitter: bool,
    pub(super) stable_after: Duration,
    pub(super) while_disconnected: WhileDisconnected,
    pub(super) on_connect: Option<OnConnect>,
    pub(super) retry: Option<RetryPolicy>,
}

impl fmt::Debug for ReconnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectConfig")
            .field("initial_delay", &self.initial_delay)
            .field("max_delay", &self.max_delay)
            .field("max_attempts", &self.max_attempts)
            .field("jitter", &self.jitter)
            .field("stable_after", &self.stable_after)
            .field("while_disconnected", &self.while_disconnected)
            .field("on_connect", &self.on_connect.is_some())
            .field("retry_policy", &self.retry.is_some())
            .finish()
    }
}

impl Default for ReconnectConfig {
    /// 500 ms initial delay doubling to at most 30 s, forever, full jitter, stable after 5 s,
    /// up to 1 MiB queued while disconnected, the [default retry policy](Self::default_retry).
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: None,
            jitter: true,
            stable_after: Duration::from_secs(5),
            while_disconnected: WhileDisconnected::Queue(1 << 20),
            on_connect: None,
            retry: None,
        }
    }
}

impl ReconnectConfig {
    /// The first wait. Default 500 ms.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }
    /// The longest wait, also the cap on a server's `Retry-After`. Default 30 s.
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
    /// Queue or reject sends while disconnected. Default `Queue(1 MiB)`.
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
    /// Decides after each ended connection or failed attempt whether to try again
    /// ([`Retry::Backoff`]), when ([`Retry::After`], capped by
    /// [`max_delay`](Self::max_delay)), or to end the session with that error
    /// ([`Retry::Stop`]). Default: [`default_retry`](Self::default_retry); a policy can
    /// call it for the cases it does not decide itself. [`max_attempts`](Self::max_attempts)
    /// applies whatever the policy says.
    pub fn retry_policy(
        mut self,
        policy: impl Fn(&Disconnect<'_>) -> Retry + Send + Sync + 'static,
    ) -> Self {
        self.retry = Some(Arc::new(policy));
        self
    }

    /// The default retry policy. It stops on what trying again cannot fix:
    /// - a handshake refused with a 4xx status other than 408 (Request Timeout) and 429 (Too
    ///   Many Requests), such as 401, 403 or 404;
    /// - a URL or configuration the client refuses;
    /// - a Close from the server with 1002 (protocol error), 1003 (cannot accept), 1007 (not
    ///   consistent), 1008 (policy violation), 1009 (too big) or 1010 (extension required).
    ///
    /// A 429 or 503 with `Retry-After` (seconds or an HTTP date) waits that long; everything
    /// else (the network, timeouts, 5xx, a server's 1001, 1011, 1012 or 1013, a failure this
    /// client detected on an open connection) is retried with the backoff.
    pub fn default_retry(ended: &Disconnect<'_>) -> Retry {
        super::policy::default_retry(ended, std::time::SystemTime::now())
    }

    /// The backoff cap before attempt `n` (1-based): `initial × 2^(n−1)`, at most `max_delay`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    pub(super) fn decide(&self, ended: &Disconnect<'_>) -> Retry {
        match &self.retry {
            Some(policy) => policy(ended),
            None => Self::default_retry(ended),
        }
    }
}
