//! What every session of a client (or of a server) shares: limits, queue bounds, timers and the
//! converter. The client's builder and the server's accept config each make one; a session
//! holds a reference, not a copy.

use std::sync::Arc;
use std::time::Duration;

/// Settings sessions are opened with (several can change on a live session).
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub max_frame_size: usize,
    pub max_message_size: usize,
    pub masking: bool,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
    pub close_timeout: Duration,
    pub outgoing_capacity: usize,
    pub incoming_capacity: usize,
    pub incoming_bytes: usize,
    pub write_fragment_size: Option<usize>,
    pub converter: Option<Arc<dyn crate::convert::Converter>>,
    pub stream_incoming: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            masking: true,
            // Keepalive on, as Python `websockets` has it: a dead peer or a stalled network
            // otherwise leaves `recv()` waiting forever. `ping_interval(None)` is Ktor's off.
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            close_timeout: Duration::from_secs(5),
            outgoing_capacity: 1 << 20,
            incoming_capacity: 256,
            incoming_bytes: 1 << 20,
            write_fragment_size: None,
            converter: None,
            stream_incoming: false,
        }
    }
}
