//! What a reconnecting session tells about its connections: [`ConnectionEvent`], and
//! [`Events`], the stream of them a caller subscribes to. The supervisor publishes; nothing
//! here waits for a subscriber (a slow one skips events and is told how many).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::broadcast;
use wsc_proto::CloseReason;

use crate::error::Error;

/// How many events a subscriber may fall behind before it skips the oldest.
pub(super) const EVENTS_KEPT: usize = 256;

/// A change in a reconnecting session's state. `Display` (and `Debug`) show an error whole,
/// with its causes: "closed: connecting to 127.0.0.1:9001: Connection refused (os error 111)".
#[derive(Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Attempt `attempt` (1-based, counting since the last stable connection) is starting.
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// Connected, and the hook (if any) succeeded.
    Open,
    /// A connection ended or an attempt failed.
    Closed {
        /// The close reason, if a connection was open.
        reason: Option<CloseReason>,
        /// The error, if it failed.
        error: Option<Error>,
    },
    /// Waiting before the next attempt.
    Waiting {
        /// How long.
        delay: Duration,
        /// The attempt that follows.
        attempt: u32,
    },
    /// Stopped reconnecting: after `attempts` failed attempts in a row
    /// ([`max_attempts`](crate::ReconnectConfig::max_attempts)), or because the retry policy
    /// said so. The session ends with `error`.
    GaveUp {
        /// Failed attempts in a row, the last included.
        attempts: u32,
        /// What ended the last attempt.
        error: Error,
    },
    /// This subscriber fell behind and `count` events were skipped (the session keeps the
    /// last 256 for a slow subscriber).
    Missed {
        /// How many.
        count: u64,
    },
}

impl fmt::Display for ConnectionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionEvent::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            ConnectionEvent::Open => f.write_str("open"),
            ConnectionEvent::Closed { reason, error } => {
                f.write_str("closed")?;
                if let Some(r) = reason {
                    write!(f, " ({r})")?;
                }
                if let Some(e) = error {
                    write!(f, ": {}", e.chain())?;
                }
                Ok(())
            }
            ConnectionEvent::Waiting { delay, attempt } => {
                write!(f, "waiting {delay:.1?} before attempt {attempt}")
            }
            ConnectionEvent::GaveUp { attempts, error } => {
                write!(
                    f,
                    "gave up after {attempts} failed attempts: {}",
                    error.chain()
                )
            }
            ConnectionEvent::Missed { count } => write!(f, "{count} events missed"),
        }
    }
}

impl fmt::Debug for ConnectionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionEvent::Connecting { attempt } => f
                .debug_struct("Connecting")
                .field("attempt", attempt)
                .finish(),
            ConnectionEvent::Open => f.write_str("Open"),
            ConnectionEvent::Closed { reason, error } => f
                .debug_struct("Closed")
                .field("reason", reason)
                .field("error", &error.as_ref().map(|e| e.chain().to_string()))
                .finish(),
            ConnectionEvent::Waiting { delay, attempt } => f
                .debug_struct("Waiting")
                .field("delay", delay)
                .field("attempt", attempt)
                .finish(),
            ConnectionEvent::GaveUp { attempts, error } => f
                .debug_struct("GaveUp")
                .field("attempts", attempts)
                .field("error", &error.chain().to_string())
                .finish(),
            ConnectionEvent::Missed { count } => {
                f.debug_struct("Missed").field("count", count).finish()
            }
        }
    }
}

/// The event received, and the receiver back.
type Received = (
    Option<ConnectionEvent>,
    broadcast::Receiver<ConnectionEvent>,
);
type Next = Pin<Box<dyn Future<Output = Received> + Send + Sync>>;

/// A subscription to a reconnecting session's [`ConnectionEvent`]s, from
/// [`Reconnecting::events`](crate::Reconnecting::events): a
/// [`Stream`](futures_core::Stream), or [`recv`](Self::recv) in a loop. It sees the events
/// published after it was made, in order, and ends once the session's background task has
/// ended. A subscriber that falls more than 256 events behind skips the oldest and gets one
/// [`ConnectionEvent::Missed`] saying how many; the session never waits for it.
pub struct Events {
    state: EventsState,
}

enum EventsState {
    Idle(broadcast::Receiver<ConnectionEvent>),
    /// A receive in progress, kept across dropped `recv` futures.
    Waiting(Next),
    Ended,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("ended", &matches!(self.state, EventsState::Ended))
            .finish()
    }
}

impl Events {
    pub(super) fn new(rx: broadcast::Receiver<ConnectionEvent>) -> Self {
        Events {
            state: EventsState::Idle(rx),
        }
    }

    /// The next event, or `None` once the session's background task has ended and every
    /// event before that was seen.
    ///
    /// Cancel safe: dropping the future loses no event (the receive goes on at the next call).
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        loop {
            match std::mem::replace(&mut self.state, EventsState::Ended) {
                EventsState::Ended => return Poll::Ready(None),
                EventsState::Idle(mut rx) => {
                    // The common case without a future: an event is already there.
                    match rx.try_recv() {
                        Ok(e) => {
                            self.state = EventsState::Idle(rx);
                            return Poll::Ready(Some(e));
                        }
                        Err(broadcast::error::TryRecvError::Lagged(count)) => {
                            self.state = EventsState::Idle(rx);
                            return Poll::Ready(Some(ConnectionEvent::Missed { count }));
                        }
                        Err(broadcast::error::TryRecvError::Closed) => {
                            return Poll::Ready(None);
                        }
                        Err(broadcast::error::TryRecvError::Empty) => {
                            self.state = EventsState::Waiting(Box::pin(async move {
                                let e = match rx.recv().await {
                                    Ok(e) => Some(e),
                                    Err(broadcast::error::RecvError::Lagged(count)) => {
                                        Some(ConnectionEvent::Missed { count })
                                    }
                                    Err(broadcast::error::RecvError::Closed) => None,
                                };
                                (e, rx)
                            }));
                        }
                    }
                }
                EventsState::Waiting(mut next) => match next.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = EventsState::Waiting(next);
                        return Poll::Pending;
                    }
                    Poll::Ready((Some(e), rx)) => {
                        self.state = EventsState::Idle(rx);
                        return Poll::Ready(Some(e));
                    }
                    Poll::Ready((None, _)) => return Poll::Ready(None),
                },
            }
        }
    }
}

impl futures_core::Stream for Events {
    type Item = ConnectionEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        self.get_mut().poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_subscriber_is_told_how_many_it_missed_then_sees_the_rest() {
        let (tx, rx) = broadcast::channel(4);
        let mut events = Events::new(rx);
        for attempt in 1..=6 {
            tx.send(ConnectionEvent::Connecting { attempt }).unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(e) = events.recv().await {
            seen.push(format!("{e:?}"));
        }
        assert_eq!(
            seen,
            [
                "Missed { count: 2 }",
                "Connecting { attempt: 3 }",
                "Connecting { attempt: 4 }",
                "Connecting { attempt: 5 }",
                "Connecting { attempt: 6 }",
            ]
        );
        assert!(events.recv().await.is_none(), "stays ended");
    }

    #[tokio::test]
    async fn a_dropped_recv_loses_no_event() {
        let (tx, rx) = broadcast::channel(4);
        let mut events = Events::new(rx);
        // Pending, then dropped.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), events.recv())
                .await
                .is_err()
        );
        tx.send(ConnectionEvent::Open).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(1), events.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(ConnectionEvent::Open)));
    }
}
