//! The whole connection core, fed the input in chunks with commands and time passing between
//! them: nothing panics, what it holds of its own output stays bounded, and once it says it
//! ended it says how.
#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsc_proto::{Config, Connection, Event};
use wsc_proto::{CloseReason, Entropy, Message, Outbox, Role};

#[derive(Default)]
struct Seq(u8);
impl Entropy for Seq {
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            self.0 = self.0.wrapping_add(13);
            *x = self.0;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else {
        return;
    };
    let mut config = Config::new(if ctl & 1 == 0 {
        Role::Client
    } else {
        Role::Server
    });
    config.raw = ctl & 2 != 0;
    config.ping_interval = (ctl & 4 != 0).then(|| Duration::from_millis(50));
    // Streamed, with frames over 64 bytes handed out in pieces.
    config.stream_incoming = ctl & 8 != 0;
    if config.stream_incoming {
        config.limits.max_frame_size = 64;
    }
    let mut now = Duration::ZERO;
    let mut c = Connection::new(config, Outbox::<Seq>::new(1 << 16), Vec::new(), now);
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    while let Some((&op, tail)) = rest.split_first() {
        let n = usize::from(op >> 3).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        match op & 7 {
            0 | 1 | 2 => {
                buf.extend_from_slice(chunk);
                c.handle_read(&mut buf, now);
            }
            3 => {
                let _ = c.send(&Message::binary(chunk.to_vec()));
            }
            4 => {
                c.close(Some(CloseReason::normal()), now);
            }
            5 => now += Duration::from_millis(u64::from(op)),
            6 => c.handle_timeout(now),
            _ => c.handle_eof(now),
        }
        while let Some(e) = c.poll_event() {
            if let Event::Closed = e {
                assert!(c.outcome().is_some(), "closed without an outcome");
            }
        }
        out.clear();
        let direct = c.poll_transmit(&mut out, 1 << 16);
        let wrote = out.len() + direct.map_or(0, |d| d.len());
        c.handle_written(wrote);
        assert!(out.len() <= (1 << 16) * 2, "transmit held {}", out.len());
    }
});
