use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use wsc_proto::DecodeError;
use wsc_proto::{Config, Connection};
use wsc_proto::{Extension, OpCode, Role};

use tokio::io::AsyncWriteExt;

use super::super::shared::{Outcome, SessionQueue, Shared};
use super::super::{Call, Handle};
use crate::error::Error;
use crate::server::{AcceptConfig, accept};

/// A send blocked on a full queue, polled again and again with the same waker (a
/// `select!` or `timeout()` loop), waits as one entry, not one per poll.
#[tokio::test]
async fn a_blocked_send_polled_in_a_loop_waits_once() {
    let (mut peer, io) = tokio::io::duplex(64 * 1024);
    peer.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // The peer never reads: the duplex fills, then the session's queue.
    let session = accept(io, &AcceptConfig::default()).await.unwrap();
    let big = vec![0u8; 256 * 1024];
    let mut sends = 0;
    let mut blocked = loop {
        let mut f = Box::pin(session.send_binary(&big));
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(r) => r.unwrap(),
            Poll::Pending => break f,
        }
        sends += 1;
        assert!(sends < 100, "the queue never filled");
        tokio::task::yield_now().await;
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for _ in 0..100_000 {
        assert!(blocked.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(session.sender.shared.out().waiting(), 1);
    drop(peer);
}

/// Wakes by raising a flag the test reads.
struct Flag(AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type Conn = Connection<SessionQueue>;

/// A session's shared state with `exts` for outgoing messages, a sender on it and a connection
/// driven by hand (no driver: the test plays its part).
fn hand_driven(exts: Vec<Box<dyn Extension>>) -> (Arc<Shared>, super::Sender, Conn) {
    let url = url::Url::parse("ws://127.0.0.1:1/").unwrap();
    let call = Call::new(&url, [], [], None, Vec::new());
    let shared = Shared::new(Arc::default(), exts, Role::Client, call);
    let sender = super::Sender::new(Handle::new(&shared));
    let conn = Connection::new(
        Config::new(Role::Client),
        SessionQueue(shared.clone()),
        Vec::new(),
        Duration::ZERO,
    );
    (shared, sender, conn)
}

/// A masked frame from the server: the connection fails (1002) and stops taking data.
fn fail(conn: &mut Conn) {
    conn.handle_read(
        &mut BytesMut::from(&b"\x81\x81\0\0\0\0x"[..]),
        Duration::ZERO,
    );
}

/// What the driver does in the poll that saw the failure.
fn publish(shared: &Shared, conn: &Conn) {
    let decided = conn.outcome().cloned().expect("the connection failed");
    let Some(wsc_proto::Failure::Protocol(e)) = decided.failure else {
        panic!("a protocol failure")
    };
    shared.publish_outcome(Outcome {
        reason: decided.reason,
        peer: decided.peer,
        result: Err(Error::protocol(e)),
    });
}

/// A send refused because the connection just failed reports the failure, not a bare
/// `Closed(None)`, even when it runs between the connection's decision and the driver
/// publishing it: it waits for the outcome, which the driver publishes in the same poll.
#[test]
fn a_send_refused_as_the_connection_fails_names_the_cause() {
    let (shared, sender, mut conn) = hand_driven(Vec::new());
    fail(&mut conn);
    assert!(shared.outcome().is_none(), "not published yet");

    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut send = Box::pin(sender.send_text("late"));
    assert!(send.as_mut().poll(&mut cx).is_pending(), "no Closed(None)");
    publish(&shared, &conn);
    assert!(
        flag.0.load(Ordering::SeqCst),
        "woken when the outcome is published"
    );
    match send.as_mut().poll(&mut cx) {
        Poll::Ready(Err(Error::Protocol { .. })) => {}
        other => panic!("{other:?}"),
    }
    // A close the application asked for is refused at once, while its handshake runs.
    let (shared2, sender2, mut conn2) = hand_driven(Vec::new());
    shared2.request_close(None);
    for handed_out in [false, true] {
        if handed_out {
            // Our Close goes out: the handshake runs, the outcome is still open.
            let mut wire = BytesMut::new();
            conn2.poll_transmit(&mut wire, 1 << 16);
            assert_eq!(wire.first(), Some(&0x88));
            assert!(conn2.outcome().is_none());
        }
        let mut send2 = Box::pin(sender2.send_text("after close"));
        assert!(
            matches!(
                send2.as_mut().poll(&mut cx),
                Poll::Ready(Err(Error::Closed(None)))
            ),
            "refused at once (Close handed out: {handed_out})"
        );
    }
}

/// An extension that runs a hook while it "compresses" a message (handing it on unchanged):
/// what another task or the connection does while the queue's lock is let go.
struct WhileCompressing(Box<dyn FnMut() + Send>);

impl std::fmt::Debug for WhileCompressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WhileCompressing")
    }
}

impl Extension for WhileCompressing {
    fn name(&self) -> &'static str {
        "while-compressing"
    }
    fn rsv(&self) -> u8 {
        0x40
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn encode(&mut self, _: OpCode, _: &[u8]) -> Result<Option<&[u8]>, String> {
        (self.0)();
        Ok(None)
    }
    fn decode(&mut self, _: &[u8], _: bool, _: &mut Vec<u8>, _: usize) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// Fails the connection in `slot` (once there is one) while a message is compressed.
fn tripwire(slot: &Arc<Mutex<Option<Conn>>>) -> Box<dyn Extension> {
    let slot = slot.clone();
    Box::new(WhileCompressing(Box::new(move || {
        if let Some(conn) = slot.lock().unwrap().as_mut() {
            fail(conn);
        }
    })))
}

/// Queues a 100-byte Ping, as another task would (control frames take no chain lock), on the
/// session in `slot` (once there is one) while a message is compressed.
fn ping_meanwhile(slot: &Arc<Mutex<Option<Arc<Shared>>>>) -> Box<dyn Extension> {
    let slot = slot.clone();
    Box::new(WhileCompressing(Box::new(move || {
        if let Some(shared) = slot.lock().unwrap().as_ref() {
            shared
                .out()
                .outbox
                .send_frame(&wsc_proto::Frame::ping(vec![0u8; 100]), Duration::ZERO)
                .expect("the queue is under its capacity");
        }
    })))
}

/// The same on a compressing session, where the connection may fail while the message is
/// compressed (the queue's lock let go): the send reports the failure, not `Closed(None)`.
#[test]
fn a_compressed_send_refused_as_the_connection_fails_names_the_cause() {
    let slot = Arc::new(Mutex::new(None));
    let (shared, sender, conn) = hand_driven(vec![tripwire(&slot)]);
    *slot.lock().unwrap() = Some(conn);

    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut send = Box::pin(sender.send_text("compressed late"));
    assert!(send.as_mut().poll(&mut cx).is_pending(), "no Closed(None)");
    let conn = slot.lock().unwrap().take().unwrap();
    assert!(
        conn.outcome().is_some(),
        "the tripwire failed the connection"
    );
    publish(&shared, &conn);
    assert!(flag.0.load(Ordering::SeqCst), "woken by the outcome");
    match send.as_mut().poll(&mut cx) {
        Poll::Ready(Err(Error::Protocol { .. })) => {}
        other => panic!("{other:?}"),
    }
    // The Sink cannot wait in `start_send`: it reports at once, and the failure once known.
    let mut sink = sender.clone();
    match futures_sink::Sink::start_send(Pin::new(&mut sink), wsc_proto::Message::text("x")) {
        Err(Error::Protocol { .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// Queues data up to 50 bytes under the queue's capacity: room for one more message.
fn fill_to_just_under_capacity(shared: &Shared) {
    let mut out = shared.out();
    let room = out.outbox.capacity() - out.outbox.len();
    out.outbox
        .send(OpCode::Binary, &vec![0u8; room - 50])
        .unwrap();
}

/// A compressed message admitted before it was compressed is queued even if control frames
/// filled the queue meanwhile: the compressor has taken it, so dropping it would garble every
/// later message for the peer, and the session is open.
#[test]
fn a_compressed_send_admitted_is_queued_though_a_ping_filled_the_queue() {
    let slot = Arc::new(Mutex::new(None));
    let (shared, sender, _conn) = hand_driven(vec![ping_meanwhile(&slot)]);
    fill_to_just_under_capacity(&shared);
    *slot.lock().unwrap() = Some(shared.clone());
    let before = shared.out().outbox.len();

    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut send = Box::pin(sender.send_text("compressed"));
    assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    // The Ping (2 + 4 + 100 bytes) and the message (2 + 4 + 10) are both in.
    assert_eq!(shared.out().outbox.len(), before + 106 + 16);
    // Full now: the next send waits for room instead of compressing.
    *slot.lock().unwrap() = None;
    let mut next = Box::pin(sender.send_text("waits"));
    assert!(next.as_mut().poll(&mut cx).is_pending());
}

/// A `Sink` that `poll_ready` found room for takes the next message whatever other tasks
/// queued since (here a Ping), compressed or not; one that skips `poll_ready` gets
/// `QueueFull` from a full queue and queues nothing, so a caller that never asks for room
/// cannot grow the queue.
#[test]
fn a_sink_keeps_the_room_poll_ready_found() {
    use futures_sink::Sink;
    use wsc_proto::Message;

    for compressed in [false, true] {
        let slot = Arc::new(Mutex::new(None));
        let exts: Vec<Box<dyn Extension>> = match compressed {
            true => vec![ping_meanwhile(&slot)],
            false => Vec::new(),
        };
        let (shared, mut sink, _conn) = hand_driven(exts);
        fill_to_just_under_capacity(&shared);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            Pin::new(&mut sink).poll_ready(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let before = shared.out().outbox.len();
        // Another task's Ping: before the send, or while it is compressed.
        match compressed {
            true => *slot.lock().unwrap() = Some(shared.clone()),
            false => {
                shared
                    .out()
                    .outbox
                    .send_frame(&wsc_proto::Frame::ping(vec![0u8; 100]), Duration::ZERO)
                    .unwrap();
                // The room is the original's: a clone made now has none.
                let mut clone = sink.clone();
                let r = Pin::new(&mut clone).start_send(Message::binary(vec![3u8; 10]));
                assert!(matches!(r, Err(Error::QueueFull)), "{r:?}");
            }
        }
        Pin::new(&mut sink)
            .start_send(Message::binary(vec![1u8; 10]))
            .unwrap();
        assert_eq!(shared.out().outbox.len(), before + 106 + 16);
        *slot.lock().unwrap() = None;

        // Full, and no poll_ready since: refused, nothing queued.
        let full = shared.out().outbox.len();
        for _ in 0..3 {
            match Pin::new(&mut sink).start_send(Message::binary(vec![2u8; 10])) {
                Err(Error::QueueFull) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(shared.out().outbox.len(), full);
        assert!(Pin::new(&mut sink).poll_ready(&mut cx).is_pending());
    }
}

/// An extension that hands every message on as it is, marked with RSV1: what the wire shows
/// is whether a message went through the chain.
#[derive(Debug, Default)]
struct Marking(Vec<u8>);

impl Extension for Marking {
    fn name(&self) -> &'static str {
        "marking"
    }
    fn rsv(&self) -> u8 {
        0x40
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn encode(&mut self, _: OpCode, input: &[u8]) -> Result<Option<&[u8]>, String> {
        self.0 = input.to_vec();
        Ok(Some(&self.0))
    }
    fn decode(&mut self, _: &[u8], _: bool, _: &mut Vec<u8>, _: usize) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// The first byte of each frame the connection hands out (FIN, RSV, opcode), for frames with
/// payloads under 126 bytes.
fn first_bytes(conn: &mut Conn) -> Vec<u8> {
    let mut buf = BytesMut::new();
    assert!(conn.poll_transmit(&mut buf, 1 << 20).is_none());
    let mut heads = Vec::new();
    while !buf.is_empty() {
        heads.push(buf[0]);
        let len = usize::from(buf[1] & 0x7f) + if buf[1] & 0x80 != 0 { 6 } else { 2 };
        let _ = buf.split_to(len);
    }
    heads
}

/// A sender that finds the compressor lent to another task waits as a task: its send is
/// `Pending` (no thread blocks), it is woken when the chain comes back, and then it goes
/// through the chain.
#[test]
fn a_send_waiting_for_the_compressor_yields_and_is_woken() {
    let (shared, sender, mut conn) = hand_driven(vec![Box::new(Marking::default())]);
    let lent = shared.exts.as_deref().unwrap().try_lend().expect("free");
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut send = Box::pin(sender.send_text("hi"));
    assert!(send.as_mut().poll(&mut cx).is_pending());
    assert!(shared.exts.as_deref().unwrap().try_lend().is_none());
    assert!(!flag.0.load(Ordering::SeqCst));
    drop(lent);
    assert!(
        flag.0.load(Ordering::SeqCst),
        "woken when the chain came back"
    );
    assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(first_bytes(&mut conn), [0x80 | 0x40 | 0x1]);
}

/// A `Sink`'s `start_send` cannot wait: when another task holds the compressor, its message
/// goes out uncompressed (RSV1 clear) rather than block the thread; otherwise through it.
#[test]
fn a_sink_send_sends_uncompressed_while_the_compressor_is_lent() {
    use futures_sink::Sink;
    use wsc_proto::Message;

    let (shared, mut sink, mut conn) = hand_driven(vec![Box::new(Marking::default())]);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for lend in [true, false] {
        let lent = lend.then(|| shared.exts.as_deref().unwrap().try_lend().unwrap());
        assert!(matches!(
            Pin::new(&mut sink).poll_ready(&mut cx),
            Poll::Ready(Ok(()))
        ));
        Pin::new(&mut sink)
            .start_send(Message::binary(vec![1u8; 10]))
            .unwrap();
        drop(lent);
        let rsv = if lend { 0 } else { 0x40 };
        assert_eq!(first_bytes(&mut conn), [0x80 | rsv | 0x2], "lent: {lend}");
    }
}
