//! Keepalive (RFC 6455 §5.5.2, §5.5.3): when to ping the peer and when a silent peer has
//! timed out. Pure timers: the time is passed in, as a [`Duration`] since any fixed point the
//! caller chooses.
//!
//! As in Ktor, the first ping goes out one interval after the start, the timeout counts from
//! the moment the ping is queued, and only a Pong that echoes the ping's payload ends the wait.
//! A wait that ends while the connection is not reading its input (its reader applies
//! backpressure, so the Pong may be sitting unread) starts over instead of timing out.

use std::time::Duration;

/// The ping timeout for `interval` and the configured `timeout`: `timeout` when it is set
/// (and not zero), twice the interval otherwise (Ktor's rule; `None` when neither is set).
/// The one place this rule lives: whoever reports the timeout in force asks here.
///
/// ```
/// use std::time::Duration;
/// use wsc_proto::ping_timeout;
/// let s = Duration::from_secs;
/// assert_eq!(ping_timeout(Some(s(20)), None), Some(s(40)));
/// assert_eq!(ping_timeout(Some(s(20)), Some(s(5))), Some(s(5)));
/// assert_eq!(ping_timeout(None, None), None);
/// ```
pub fn ping_timeout(interval: Option<Duration>, timeout: Option<Duration>) -> Option<Duration> {
    timeout
        .filter(|t| !t.is_zero())
        .or_else(|| interval.map(|i| i.saturating_mul(2)))
}

/// What [`Keepalive::on_timeout`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a Ping now (then call [`Keepalive::sent`]).
    Ping,
    /// The peer did not answer in time: fail with 1011 "Ping timeout".
    TimedOut,
}

/// Times are nanoseconds (`u64`: 584 years) rather than `Duration`s: every connection holds
/// this struct, so it is kept small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Off,
    Idle { next: u64 },
    Awaiting { payload: [u8; 8], deadline: u64 },
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The ping schedule and the pong deadline of one connection.
///
/// ```
/// use std::time::Duration;
/// use wsc_proto::{Due, Keepalive};
/// let s = Duration::from_secs;
/// let mut k = Keepalive::new(Some(s(20)), None, s(0)); // timeout: twice the interval
/// assert_eq!(k.deadline(), Some(s(20)));
/// assert_eq!(k.on_timeout(s(20), false), Due::Ping);
/// k.sent(*b"12345678", s(20));
/// assert!(!k.on_pong(b"other", s(21)));
/// assert_eq!(k.on_timeout(s(60), false), Due::TimedOut);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    interval: u64,
    timeout: u64,
    state: State,
}

impl Keepalive {
    /// No pings.
    pub const fn off() -> Self {
        Keepalive {
            interval: 0,
            timeout: 0,
            state: State::Off,
        }
    }

    /// Pings every `interval` (`None`: off), each answered within `timeout` (`None`: twice the
    /// interval, Ktor's rule; see [`ping_timeout`]), the first one `interval` after `now`.
    pub fn new(interval: Option<Duration>, timeout: Option<Duration>, now: Duration) -> Self {
        match interval.map(nanos).filter(|&i| i != 0) {
            None => Keepalive::off(),
            Some(i) => Keepalive {
                interval: i,
                timeout: ping_timeout(interval, timeout).map_or(i.saturating_mul(2), nanos),
                state: State::Idle {
                    next: nanos(now).saturating_add(i),
                },
            },
        }
    }

    /// Whether pings are scheduled.
    pub fn is_on(&self) -> bool {
        self.state != State::Off
    }

    /// When [`on_timeout`](Self::on_timeout) should next be called.
    pub fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Off => None,
            State::Idle { next } => Some(Duration::from_nanos(next)),
            State::Awaiting { deadline, .. } => Some(Duration::from_nanos(deadline)),
        }
    }

    /// What is due at `now`. `paused` means the connection is not reading its input:
    /// a Pong may be waiting unread, so a wait that ends then starts over.
    pub fn on_timeout(&mut self, now: Duration, paused: bool) -> Due {
        let now = nanos(now);
        match &mut self.state {
            State::Idle { next } if now >= *next => Due::Ping,
            State::Awaiting { deadline, .. } if now >= *deadline => {
                if paused {
                    *deadline = now.saturating_add(self.timeout);
                    Due::Nothing
                } else {
                    Due::TimedOut
                }
            }
            _ => Due::Nothing,
        }
    }

    /// A Ping with `payload` was queued at `now`: its Pong is awaited until the timeout.
    pub fn sent(&mut self, payload: [u8; 8], now: Duration) {
        if self.state != State::Off {
            self.state = State::Awaiting {
                payload,
                deadline: nanos(now).saturating_add(self.timeout),
            };
        }
    }

    /// The payload of the Ping whose Pong is awaited, if one is.
    pub fn awaited(&self) -> Option<[u8; 8]> {
        match self.state {
            State::Awaiting { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// A Pong arrived at `now`: `true` if it answers the awaited Ping, and the next one is
    /// then scheduled an interval later.
    pub fn on_pong(&mut self, payload: &[u8], now: Duration) -> bool {
        match self.state {
            State::Awaiting { payload: p, .. } if payload == p => {
                self.state = State::Idle {
                    next: nanos(now).saturating_add(self.interval),
                };
                true
            }
            _ => false,
        }
    }

    /// Stops pinging (the connection is closing).
    pub fn stop(&mut self) {
        self.state = State::Off;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pings_on_schedule_and_times_out_a_silent_peer() {
        let mut k = Keepalive::new(Some(ms(100)), Some(ms(30)), ms(5));
        assert_eq!(k.on_timeout(ms(104), false), Due::Nothing);
        assert_eq!(k.on_timeout(ms(105), false), Due::Ping);
        k.sent([1; 8], ms(105));
        assert_eq!(k.awaited(), Some([1; 8]));
        assert_eq!(k.deadline(), Some(ms(135)));
        assert!(k.on_pong(&[1; 8], ms(120)));
        assert_eq!(
            k.deadline(),
            Some(ms(220)),
            "the next ping an interval after the pong"
        );
        assert_eq!(k.on_timeout(ms(220), false), Due::Ping);
        k.sent([2; 8], ms(220));
        assert!(!k.on_pong(&[1; 8], ms(230)), "a stale pong does not count");
        assert_eq!(k.on_timeout(ms(250), false), Due::TimedOut);
    }

    #[test]
    fn a_wait_that_ends_while_input_is_paused_starts_over() {
        let mut k = Keepalive::new(Some(ms(10)), None, ms(0));
        k.sent([3; 8], ms(10));
        assert_eq!(k.deadline(), Some(ms(30)));
        assert_eq!(k.on_timeout(ms(30), true), Due::Nothing);
        assert_eq!(k.deadline(), Some(ms(50)));
        assert_eq!(k.on_timeout(ms(50), false), Due::TimedOut);
    }

    #[test]
    fn off_does_nothing() {
        let mut k = Keepalive::new(None, Some(ms(1)), ms(0));
        assert!(!k.is_on());
        assert_eq!(k.deadline(), None);
        assert_eq!(k.on_timeout(ms(1000), false), Due::Nothing);
        k.sent([0; 8], ms(0));
        assert_eq!(k.deadline(), None);
    }
}
