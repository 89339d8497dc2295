//! The supervisor: the one task that owns a reconnecting session's connections. It connects,
//! runs the on-connect hook, hands each connection's receiver to the reader, moves queued
//! sends to the open connection, asks the retry policy what to do when a connection ends,
//! and waits out the backoff ([`Schedule`]).
//!
//! What it must not break: it never awaits the application (received messages stay in the
//! connection's own queue until read; a stop request is heard in every state), and its
//! close ends within the close timeout whatever the peer does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use wsc_proto::{CloseCode, CloseReason};

use super::config::ReconnectConfig;
use super::events::ConnectionEvent;
use super::inbox::Inbox;
use super::policy::{Disconnect, Retry};
use super::queue::{Control, Out};
use crate::error::{Error, TimeoutKind};
use crate::session::{Sender, Session};

/// Opens one connection (the handshake included).
pub(super) type Connector =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Session, Error>> + Send>> + Send + Sync>;

/// A uniformly random number in `[0, 1)`, for jitter.
pub(super) type Random = Box<dyn FnMut() -> f64 + Send>;

/// The backoff schedule: attempts in a row and the wait before the next one.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Failed attempts in a row, the current one included.
    attempt: u32,
}

impl Schedule {
    /// Starts an attempt; returns its number (1-based).
    fn begin(&mut self) -> u32 {
        self.attempt = self.attempt.saturating_add(1);
        self.attempt
    }

    /// A connection that opened lasted `lasted`: if that is stable, counting starts afresh
    /// (the next wait is the initial delay, so a server's 1012/1013 is never hammered).
    fn opened_for(&mut self, lasted: Duration, config: &ReconnectConfig) {
        if lasted >= config.stable_after {
            self.attempt = 0;
        }
    }

    /// The wait before the next attempt, or `None` to give up.
    fn next_wait(
        &self,
        config: &ReconnectConfig,
        decision: Retry,
        random: &mut Random,
    ) -> Option<Duration> {
        if let Some(max) = config.max_attempts
            && self.attempt >= max
        {
            return None;
        }
        match decision {
            Retry::Stop => None,
            Retry::After(d) => Some(d.min(config.max_delay)),
            Retry::Backoff => {
                let cap = config.cap(self.attempt.max(1));
                Some(if config.jitter {
                    cap.mul_f64(random().clamp(0.0, 1.0))
                } else {
                    cap
                })
            }
        }
    }
}

/// What ended a connection or an attempt, owned.
enum Ended {
    Connect(Error),
    Failed(Error),
    Closed(CloseReason),
}

impl Ended {
    fn as_disconnect(&self) -> Disconnect<'_> {
        match self {
            Ended::Connect(e) => Disconnect::Connect(e),
            Ended::Failed(e) => Disconnect::Failed(e),
            Ended::Closed(r) => Disconnect::Closed(r),
        }
    }
}

/// How pumping one connection ended.
enum Pumped {
    /// The caller closed (or every handle dropped); a hand-over may be under way.
    Stop(Option<Sending>),
    /// The connection ended.
    Dropped(Ended),
}

/// Handing one queued item to a connection; gives it back if the connection cannot take it.
type Sending = Pin<Box<dyn Future<Output = Result<(), Out>> + Send>>;

fn hand_over(tx: &Sender, out: Out) -> Sending {
    let tx = tx.clone();
    Box::pin(async move {
        match out {
            Out::Message(m) => tx.send(m.clone()).await.map_err(|_| Out::Message(m)),
            Out::Flush(reply) => match tx.flush().await {
                Ok(()) => {
                    let _ = reply.send(Ok(()));
                    Ok(())
                }
                // What was before it goes to the next connection: so does the flush.
                Err(_) => Err(Out::Flush(reply)),
            },
        }
    })
}

pub(super) struct Supervisor {
    pub connect: Connector,
    pub config: ReconnectConfig,
    pub close_timeout: Duration,
    pub control: Arc<Control>,
    pub inbox: Arc<Inbox>,
    pub events: broadcast::Sender<ConnectionEvent>,
    pub random: Random,
    /// Taken from the queue for a connection that ended before it was done.
    pub pending: Option<Out>,
    /// What [`close`](super::ReconnectingSender::close) returns.
    pub result: Result<Option<CloseReason>, Error>,
}

impl Supervisor {
    fn emit(&self, e: ConnectionEvent) {
        crate::trace::info!(event = %e, "wsc: reconnecting session");
        let _ = self.events.send(e);
    }

    pub async fn run(mut self) {
        let gave_up = self.connect_loop().await;
        let (send_error, last_item) = match gave_up {
            // An open connection's failure is already the last item of its receiver.
            Some((e, delivered)) => (e.clone(), (!delivered).then_some(e)),
            None => (Error::Closed(self.control.close_with()), None),
        };
        self.control.end(send_error);
        if let Some(Out::Flush(reply)) = self.pending.take() {
            let _ = reply.send(Err(self.control.end_error()));
        }
        self.inbox.finish(last_item);
        let result = std::mem::replace(&mut self.result, Ok(None));
        self.control.done.send_replace(Some(result));
    }

    /// Runs until stopped (`None`) or given up (the error, and whether the reader already
    /// has it as a connection's last item).
    async fn connect_loop(&mut self) -> Option<(Error, bool)> {
        let control = self.control.clone();
        let inbox = self.inbox.clone();
        let mut schedule = Schedule::default();
        loop {
            // No new connection while an earlier one's messages wait unread.
            tokio::select! {
                _ = std::future::poll_fn(|cx| inbox.poll_drained(cx)) => {}
                _ = control.stopping() => return None,
            }
            let attempt = schedule.begin();
            self.emit(ConnectionEvent::Connecting { attempt });
            let connected = tokio::select! {
                r = (self.connect)() => r,
                _ = control.stopping() => return None,
            };
            let ended = match connected {
                Err(e) => {
                    self.emit(ConnectionEvent::Closed {
                        reason: None,
                        error: Some(e.clone()),
                    });
                    Ended::Connect(e)
                }
                Ok(session) => match self.open(session).await {
                    Err(()) => return None,
                    Ok((ended, lasted)) => {
                        if let Some(lasted) = lasted {
                            schedule.opened_for(lasted, &self.config);
                        }
                        ended
                    }
                },
            };
            if control.is_stopped() {
                return None;
            }
            let decision = self.config.decide(&ended.as_disconnect());
            match schedule.next_wait(&self.config, decision, &mut self.random) {
                None => {
                    let error = ended.as_disconnect().to_error();
                    self.emit(ConnectionEvent::GaveUp {
                        attempts: schedule.attempt.max(1),
                        error: error.clone(),
                    });
                    return Some((error, matches!(ended, Ended::Failed(_))));
                }
                Some(delay) => {
                    self.emit(ConnectionEvent::Waiting {
                        delay,
                        attempt: schedule.attempt.saturating_add(1),
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = control.stopping() => return None,
                    }
                }
            }
        }
    }

    /// Runs the hook, then the connection until it ends (with how long it was open) or
    /// the caller stops (`Err`, closed by then).
    async fn open(&mut self, session: Session) -> Result<(Ended, Option<Duration>), ()> {
        let control = self.control.clone();
        let hooked = match self.config.on_connect.clone() {
            None => Ok(()),
            Some(hook) => tokio::select! {
                r = hook(session.sender()) => r,
                _ = control.stopping() => {
                    let (tx, _rx) = session.split();
                    self.close(tx, None).await;
                    return Err(());
                }
            },
        };
        let (tx, rx) = session.split();
        if let Err(e) = hooked {
            let reason = CloseReason::truncated(CloseCode::INTERNAL_ERROR, &e.to_string());
            let _ = tokio::time::timeout(self.close_timeout, tx.close(reason)).await;
            tx.terminate();
            self.emit(ConnectionEvent::Closed {
                reason: None,
                error: Some(e.clone()),
            });
            return Ok((Ended::Connect(e), None));
        }
        if let Some(rx) = self.inbox.push(rx) {
            super::inbox::drain(rx);
        }
        control.set_connected(true);
        self.emit(ConnectionEvent::Open);
        let opened = Instant::now();
        let pumped = self.pump(&tx).await;
        control.set_connected(false);
        match pumped {
            Pumped::Stop(sending) => {
                self.close(tx, sending).await;
                Err(())
            }
            Pumped::Dropped(ended) => Ok((ended, Some(opened.elapsed()))),
        }
    }

    /// Moves queued items to the connection until it ends or the caller stops.
    async fn pump(&mut self, tx: &Sender) -> Pumped {
        let control = self.control.clone();
        let ended = tx.close_reason();
        tokio::pin!(ended);
        let mut sending = self.pending.take().map(|out| hand_over(tx, out));
        loop {
            tokio::select! {
                biased;
                _ = control.stopping() => return Pumped::Stop(sending),
                r = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                    sending = None;
                    if let Err(out) = r {
                        // The connection is ending; the item waits for the next one.
                        self.pending = Some(out);
                    }
                }
                out = control.next(), if sending.is_none() && self.pending.is_none() => {
                    sending = Some(hand_over(tx, out));
                }
                reason = &mut ended => {
                    // Ended: closing it again returns how it ended, at once.
                    let how = tx.close(CloseReason::normal()).await;
                    self.emit(ConnectionEvent::Closed {
                        reason: Some(reason.clone()),
                        error: how.as_ref().err().cloned(),
                    });
                    return Pumped::Dropped(match how {
                        Ok(peer) => Ended::Closed(peer.unwrap_or(reason)),
                        Err(e) => Ended::Failed(e),
                    });
                }
            }
        }
    }

    /// Closes the connection as the caller asked, after what was sent before the close,
    /// all within the close timeout; past it the connection is dropped.
    async fn close(&mut self, tx: Sender, sending: Option<Sending>) {
        let reason = self
            .control
            .close_with()
            .unwrap_or_else(CloseReason::normal);
        let control = self.control.clone();
        let pending = self.pending.take();
        let closing = async {
            if let Some(out) = pending
                && hand_over(&tx, out).await.is_err()
            {
                return tx.close(reason).await;
            }
            if let Some(s) = sending
                && s.await.is_err()
            {
                return tx.close(reason).await;
            }
            while let Some(out) = control.pop() {
                if hand_over(&tx, out).await.is_err() {
                    break;
                }
            }
            tx.close(reason).await
        };
        self.result = match tokio::time::timeout(self.close_timeout, closing).await {
            Ok(r) => r,
            Err(_) => {
                tx.terminate();
                Err(Error::Timeout(TimeoutKind::Close))
            }
        };
        self.emit(ConnectionEvent::Closed {
            reason: tx.try_close_reason(),
            error: self.result.as_ref().err().cloned(),
        });
    }
}
