//! Reconnecting sessions: the retry loop Ktor users write by hand, done once and right.
//!
//! A supervisor task ([`supervisor`]) connects, runs the caller's hook after each
//! (re)connect, moves sends to the open connection, and when the connection ends or an
//! attempt fails asks the retry policy ([`policy`]) whether to try again, then waits with
//! exponential backoff and full jitter (or a server's `Retry-After`). It never reconnects
//! after the caller closes. The handles ([`handle`]) queue sends in a queue bounded in bytes
//! ([`queue`]) and read each connection's own receiver ([`inbox`]), so a reconnecting
//! session keeps a session's bounds in memory and time: an application that does not read
//! leaves messages in the connection's bounded queue, and `close()` ends within the close
//! timeout. A message handed to a connection that then dropped before writing it may be
//! lost: delivery is at most once.

mod config;
mod events;
mod handle;
mod inbox;
mod policy;
mod queue;
mod supervisor;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::broadcast;

pub use config::{OnConnect, ReconnectConfig, RetryPolicy, WhileDisconnected};
pub use events::{ConnectionEvent, Events};
pub use handle::{Reconnecting, ReconnectingSender};
pub use policy::{Disconnect, Retry};

use crate::client::RequestBuilder;
use crate::error::Error;
use crate::{Client, IntoRequest};

impl Client {
    /// A session to `target` that reconnects when the connection drops or a connect fails,
    /// as `config` and its retry policy say. The URL is checked now; connecting happens in
    /// the background, on a task of the current tokio runtime.
    ///
    /// The client's session settings apply to every connection; its
    /// [`outgoing_queue_capacity`](crate::ClientBuilder::outgoing_queue_capacity) also
    /// bounds sends queued while connected, and its
    /// [`close_timeout`](crate::ClientBuilder::close_timeout) bounds
    /// [`Reconnecting::close`].
    pub fn reconnecting(
        &self,
        target: impl IntoRequest,
        config: ReconnectConfig,
    ) -> Result<Reconnecting, Error> {
        let request = target.into_request()?;
        let client = self.clone();
        let connect: supervisor::Connector = Arc::new(move || {
            let builder = RequestBuilder::from_parts(client.clone(), request.clone());
            Box::pin(builder.connect())
        });
        Ok(start(self, config, connect, Box::new(rand::random::<f64>)))
    }
}

/// Starts the supervisor with `connect` as the way to open a connection.
fn start(
    client: &Client,
    config: ReconnectConfig,
    connect: supervisor::Connector,
    random: supervisor::Random,
) -> Reconnecting {
    let session = client.session_config();
    let control = Arc::new(queue::Control::new(
        config.while_disconnected,
        session.outgoing_capacity,
    ));
    let inbox = Arc::new(inbox::Inbox::default());
    let (events, events_rx) = broadcast::channel(events::EVENTS_KEPT);
    let sup = supervisor::Supervisor {
        connect,
        close_timeout: session.close_timeout,
        config,
        control: control.clone(),
        inbox: inbox.clone(),
        events,
        random,
        pending: None,
        result: Ok(None),
    };
    tokio::spawn(sup.run());
    Reconnecting {
        sender: ReconnectingSender {
            control,
            converter: client.converter(),
        },
        reader: inbox::Reader::new(inbox),
        events: events_rx,
    }
}
