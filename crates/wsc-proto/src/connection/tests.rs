//! The connection's rules, each pinned on fake time, and a property test that drives random
//! interleavings of input, commands, transmits and timeouts and checks the rules after every
//! step.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::close::CloseCode;
use crate::decode::{Decoder, Limits, Role};
use crate::frame::{OpCode, encode_frame};
use crate::outbox::Refused;

/// Scripted randomness: the same keys on every run.
#[derive(Default)]
struct Seq(u8);
impl Entropy for Seq {
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            self.0 = self.0.wrapping_add(7);
            *x = self.0;
        }
    }
}

type Conn = Connection<Outbox<Seq>>;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const CLOSE_TIMEOUT: Duration = ms(2000);

fn config(raw: bool) -> Config {
    Config {
        raw,
        close_timeout: CLOSE_TIMEOUT,
        ..Config::new(Role::Client)
    }
}

fn client(raw: bool) -> Conn {
    Connection::new(config(raw), Outbox::new(1 << 20), Vec::new(), ms(0))
}

/// Server frames, as a server writes them (unmasked).
fn wire(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        encode_frame(&mut b, f.opcode, f.fin, f.rsv, &f.payload, None);
    }
    b
}

fn feed(c: &mut Conn, frames: &[Frame], now: Duration) {
    let mut b = wire(frames);
    c.handle_read(&mut b, now);
}

fn events(c: &mut Conn) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Everything the connection transmits now, written in full, decoded as the server decodes.
fn transmit(c: &mut Conn) -> Vec<Frame> {
    let mut raw = BytesMut::new();
    loop {
        let mut buf = BytesMut::new();
        let direct = c.poll_transmit(&mut buf, 1 << 16);
        if buf.is_empty() && direct.is_none() {
            break;
        }
        c.handle_written(buf.len());
        raw.extend_from_slice(&buf);
        if let Some(d) = direct {
            c.handle_written(d.len());
            raw.extend_from_slice(&d);
        }
    }
    let mut d = Decoder::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut raw).expect("the client wrote a broken frame") {
        out.push(f);
    }
    assert!(raw.is_empty(), "a partial frame was handed out");
    out
}

fn close_code(f: &Frame) -> Option<u16> {
    assert_eq!(f.opcode, OpCode::Close);
    f.close_reason().unwrap().map(|r| r.code().as_u16())
}

/// The connection alone decides masking, from its role and `Config::masking`: a client masks
/// unless told not to; a server never masks, whatever the outbox or the config said.
#[test]
fn masking_follows_the_role_and_the_config_alone() {
    for (role, on, masked) in [
        (Role::Client, true, true),
        (Role::Client, false, false),
        (Role::Server, true, false),
        (Role::Server, false, false),
    ] {
        let mut out: Outbox<Seq> = Outbox::new(1 << 20);
        out.set_masking(!masked);
        let config = Config {
            masking: on,
            ..Config::new(role)
        };
        let mut c = Connection::new(config, out, Vec::new(), ms(0));
        c.send(&Message::text("hi")).unwrap();
        let mut buf = BytesMut::new();
        assert!(c.poll_transmit(&mut buf, 1 << 16).is_none());
        assert_eq!(buf[1] & 0x80 != 0, masked, "{role:?}, masking {on}");
    }
}

#[test]
fn a_bounded_few_pongs_are_owed_and_the_latest_ping_is_answered() {
    let mut c = client(false);
    // A flood of Pings while the transport takes nothing (the caller's buffer is full).
    for i in 0..10_000u32 {
        feed(&mut c, &[Frame::ping(i.to_be_bytes().to_vec())], ms(0));
        let mut full = BytesMut::from(&[0u8; 16][..]);
        assert!(c.poll_transmit(&mut full, 16).is_none());
        assert_eq!(full.len(), 16, "nothing handed out into a full buffer");
        let owed = c.tx.pong.as_deref().unwrap();
        assert!(owed.len() <= transmit::MAX_PONGS && owed.iter().all(|p| p.len() <= 125));
        assert!(c.owes_reply());
    }
    let sent = transmit(&mut c);
    assert_eq!(sent.len(), transmit::MAX_PONGS);
    assert!(sent.iter().all(|f| f.opcode == OpCode::Pong));
    assert_eq!(&sent.last().unwrap().payload[..], &9_999u32.to_be_bytes());
    // The newest ones, in order.
    for (i, f) in sent.iter().enumerate() {
        let n = 10_000 - transmit::MAX_PONGS as u32 + i as u32;
        assert_eq!(&f.payload[..], &n.to_be_bytes());
    }
    assert!(!c.owes_reply());
    assert!(
        events(&mut c).is_empty(),
        "control frames never reach a default reader"
    );
}

#[test]
fn pongs_go_ahead_of_queued_data_at_a_frame_boundary() {
    let mut c = client(false);
    let big = Bytes::from(vec![5u8; 100_000]);
    c.send(&Message::binary(big.clone())).unwrap();
    c.send(&Message::text("after")).unwrap();
    // Half of the large frame goes out, then a Ping arrives.
    let mut buf = BytesMut::new();
    assert!(c.poll_transmit(&mut buf, 40_000).is_none());
    let first = buf.len();
    c.handle_written(first);
    feed(&mut c, &[Frame::ping("now")], ms(1));
    let mut raw = buf;
    loop {
        let mut b = BytesMut::new();
        c.poll_transmit(&mut b, 40_000);
        if b.is_empty() {
            break;
        }
        c.handle_written(b.len());
        raw.extend_from_slice(&b);
    }
    let mut d = Decoder::new(Role::Server, Limits::default());
    let ops: Vec<OpCode> = std::iter::from_fn(|| d.decode(&mut raw).unwrap())
        .map(|f| f.opcode)
        .collect();
    assert_eq!(ops, [OpCode::Binary, OpCode::Pong, OpCode::Text]);
}

#[test]
fn a_close_does_not_wait_for_room_and_its_timer_runs_from_the_request() {
    let mut c = Connection::new(config(false), Outbox::<Seq>::new(100), Vec::new(), ms(0));
    c.outbox().send(OpCode::Binary, &[1; 150]).unwrap();
    assert_eq!(c.outbox().send(OpCode::Binary, b"x"), Err(Refused::Full));
    // The transport takes nothing (a peer that never reads): the caller's buffer stays full.
    let mut full = BytesMut::from(&[0u8; 8][..]);
    c.poll_transmit(&mut full, 8);
    c.outbox()
        .request_close(Some(CloseReason::normal()), ms(300));
    assert_eq!(c.outbox().send(OpCode::Binary, b"x"), Err(Refused::Closed));
    c.poll_transmit(&mut full, 8);
    assert_eq!(c.poll_timeout(), Some(ms(300) + CLOSE_TIMEOUT));
    c.handle_timeout(ms(300) + CLOSE_TIMEOUT - ms(1));
    assert!(!c.is_closed());
    c.handle_timeout(ms(300) + CLOSE_TIMEOUT);
    assert_eq!(
        c.outcome().unwrap().failure,
        Some(Failure::CloseTimeout),
        "the peer never read, never answered"
    );
    assert!(c.is_finished());
    assert_eq!(events(&mut c), [Event::Closed]);
}

#[test]
fn the_close_goes_out_after_the_data_queued_before_it() {
    let mut c = client(false);
    c.send(&Message::text("one")).unwrap();
    c.send(&Message::binary(vec![0u8; 40_000])).unwrap();
    c.close(Some(CloseReason::new(4001u16, "done").unwrap()), ms(5));
    let sent = transmit(&mut c);
    let ops: Vec<OpCode> = sent.iter().map(|f| f.opcode).collect();
    assert_eq!(ops, [OpCode::Text, OpCode::Binary, OpCode::Close]);
    assert_eq!(close_code(&sent[2]), Some(4001));
    assert!(c.close_written());
    assert!(!c.is_closed(), "waiting for the peer's Close");
    feed(
        &mut c,
        &[Frame::close(Some(&CloseReason::normal()))],
        ms(50),
    );
    let o = c.outcome().unwrap();
    assert_eq!((o.reason.code().as_u16(), o.failure.clone()), (4001, None));
    assert_eq!(o.peer, Some(CloseReason::normal()));
    assert_eq!(events(&mut c), [Event::Closed]);
    assert!(
        !c.is_finished(),
        "a client waits for the server to close TCP"
    );
    c.handle_eof(ms(60));
    assert!(c.is_finished());
}

#[test]
fn a_violation_with_nothing_before_it_fails_at_once() {
    let mut c = client(false);
    let mut b = BytesMut::from(&b"\x83\x00\x81\x02no"[..]); // reserved opcode 3, then more
    c.handle_read(&mut b, ms(0));
    let o = c.outcome().cloned().expect("failed as soon as decoded");
    assert_eq!(o.reason.code(), CloseCode::PROTOCOL_ERROR);
    assert!(matches!(
        o.failure,
        Some(Failure::Protocol(ProtocolError::ReservedOpcode(3)))
    ));
    let sent = transmit(&mut c);
    assert_eq!(sent.len(), 1);
    assert_eq!(close_code(&sent[0]), Some(1002));
    assert_eq!(events(&mut c), [Event::Closed]);
    assert!(!c.wants_read() || c.phase == Phase::Draining);
}

#[test]
fn a_violation_after_messages_fails_on_the_poll_after_they_are_taken() {
    let mut c = client(false);
    let mut b = wire(&[Frame::text("first"), Frame::binary(vec![1u8; 20_000])]);
    b.extend_from_slice(b"\xc1\x00"); // RSV1 without an extension
    c.handle_read(&mut b, ms(0));
    assert!(c.failure_pending());
    assert!(!c.wants_read(), "nothing after a violation is read");
    assert!(!c.is_closed());
    assert!(matches!(c.poll_event(), Some(Event::Run(_))));
    assert!(!c.is_closed());
    // The application answers the first message before the last one is taken.
    c.send(&Message::text("reply")).unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Message(_))));
    assert!(
        !c.is_closed(),
        "the caller decides when what it took has been delivered"
    );
    assert_eq!(c.poll_event(), Some(Event::Closed));
    assert!(c.is_closed(), "fails on the next poll");
    let sent = transmit(&mut c);
    assert_eq!(
        sent[0].opcode,
        OpCode::Text,
        "the reply goes out ahead of the Close"
    );
    assert_eq!(close_code(&sent[1]), Some(1002));
}

#[test]
fn a_violation_behind_messages_never_taken_fails_at_the_close_timeout() {
    let mut c = client(false);
    let mut b = wire(&[Frame::text("unread")]);
    b.extend_from_slice(b"\x80\x00"); // a continuation with nothing to continue
    c.handle_read(&mut b, ms(100));
    assert_eq!(c.poll_timeout(), Some(ms(100) + CLOSE_TIMEOUT));
    c.handle_timeout(ms(100) + CLOSE_TIMEOUT);
    assert!(c.is_closed());
    assert!(
        matches!(c.poll_event(), Some(Event::Run(_))),
        "nothing received is lost"
    );
    assert_eq!(c.poll_event(), Some(Event::Closed));
    assert_eq!(close_code(&transmit(&mut c)[0]), Some(1002));
}

#[test]
fn the_peers_close_is_echoed_before_the_closed_event() {
    let mut c = client(false);
    c.send(&Message::text("queued before")).unwrap();
    let theirs = CloseReason::new(4002u16, "bye").unwrap();
    feed(&mut c, &[Frame::close(Some(&theirs))], ms(10));
    assert!(
        c.owes_reply(),
        "the echo is queued when the Close is decoded"
    );
    assert_eq!(c.outbox().send(OpCode::Text, b"late"), Err(Refused::Closed));
    let o = c.outcome().unwrap().clone();
    assert_eq!(
        (o.reason.clone(), o.peer.clone()),
        (theirs.clone(), Some(theirs))
    );
    // Before the event is even taken, the transmit holds what was queued, then the echo.
    let sent = transmit(&mut c);
    assert_eq!(sent[0].opcode, OpCode::Text);
    assert_eq!(close_code(&sent[1]), Some(4002));
    assert!(c.close_written());
    assert_eq!(events(&mut c), [Event::Closed]);
    c.handle_eof(ms(20));
    assert!(c.is_finished());
}

#[test]
fn an_empty_close_reads_as_1000_and_is_echoed_empty() {
    let mut c = client(false);
    feed(&mut c, &[Frame::close(None)], ms(0));
    assert_eq!(c.outcome().unwrap().reason, CloseReason::normal());
    assert_eq!(c.outcome().unwrap().peer, None);
    assert_eq!(close_code(&transmit(&mut c)[0]), None);
}

#[test]
fn the_outcome_is_set_before_any_event_says_the_connection_ended() {
    // Every way a connection ends; `Closed` is checked against the outcome as it comes out.
    type End = fn(&mut Conn);
    let ends: [(&str, End); 8] = [
        ("peer closes", |c| feed(c, &[Frame::close(None)], ms(1))),
        ("we close", |c| {
            c.close(None, ms(1));
            transmit(c);
            feed(c, &[Frame::close(None)], ms(2));
        }),
        ("violation", |c| {
            c.handle_read(&mut BytesMut::from(&b"\x8f\x00"[..]), ms(1))
        }),
        ("eof", |c| c.handle_eof(ms(1))),
        ("transport", |c| c.handle_transport_error()),
        ("terminate", |c| c.terminate()),
        ("ping timeout", |c| {
            c.set_keepalive(Some(ms(10)), Some(ms(5)), ms(0));
            c.handle_timeout(ms(10));
            c.handle_timeout(ms(15));
        }),
        ("close timeout", |c| {
            c.close(None, ms(1));
            c.handle_timeout(ms(1) + CLOSE_TIMEOUT);
        }),
    ];
    for (name, end) in ends {
        let mut c = client(false);
        feed(&mut c, &[Frame::text("before")], ms(0));
        end(&mut c);
        let mut seen_closed = false;
        while let Some(e) = c.poll_event() {
            assert!(!seen_closed, "{name}: an event after Closed");
            if e == Event::Closed {
                assert!(c.outcome().is_some(), "{name}: Closed before the outcome");
                seen_closed = true;
            }
        }
        assert!(seen_closed, "{name}: never said it ended");
    }
}

#[test]
fn keepalive_pings_and_times_out_a_silent_peer_with_1011() {
    let mut c = client(false);
    c.set_keepalive(Some(ms(1000)), None, ms(0));
    assert_eq!(c.poll_timeout(), Some(ms(1000)));
    c.handle_timeout(ms(1000));
    let ping = transmit(&mut c);
    assert_eq!(ping[0].opcode, OpCode::Ping);
    // The Pong comes: the next ping is an interval later.
    feed(&mut c, &[Frame::pong(ping[0].payload.clone())], ms(1500));
    assert_eq!(c.poll_timeout(), Some(ms(2500)));
    c.handle_timeout(ms(2500));
    assert_eq!(transmit(&mut c)[0].opcode, OpCode::Ping);
    // Silence: at twice the interval the connection fails with 1011 "Ping timeout".
    c.handle_timeout(ms(4499));
    assert!(!c.is_closed());
    c.handle_timeout(ms(4500));
    let o = c.outcome().unwrap();
    assert_eq!(o.failure, Some(Failure::PingTimeout));
    assert_eq!(o.reason, CloseReason::truncated(1011u16, "Ping timeout"));
    let sent = transmit(&mut c);
    assert_eq!(
        sent[0].close_reason().unwrap().unwrap().reason(),
        "Ping timeout"
    );
}

#[test]
fn trimming_gives_back_only_what_is_not_needed() {
    let mut c = client(false);
    c.set_keepalive(Some(ms(1000)), None, ms(0));
    c.handle_timeout(ms(1000));
    // A ping due but not yet handed out, two messages not yet taken: trimming keeps them all.
    feed(&mut c, &[Frame::text("a")], ms(1001));
    feed(&mut c, &[Frame::binary(vec![1; 200])], ms(1001));
    c.trim();
    assert_eq!(events(&mut c).len(), 2);
    c.trim();
    let ping = transmit(&mut c);
    assert_eq!(ping[0].opcode, OpCode::Ping);
    feed(&mut c, &[Frame::pong(ping[0].payload.clone())], ms(1002));
    assert_eq!(
        c.poll_timeout(),
        Some(ms(2002)),
        "the pong answered the ping"
    );
    feed(&mut c, &[Frame::text("b")], ms(1003));
    let Some(Event::Run(mut run)) = c.poll_event() else {
        panic!("a run")
    };
    assert_eq!(run.next_message(), Some(Message::from("b")));
}

#[test]
fn a_pong_deadline_passing_while_input_is_paused_starts_over() {
    let mut c = client(false);
    c.set_keepalive(Some(ms(100)), Some(ms(50)), ms(0));
    c.handle_timeout(ms(100));
    let ping = transmit(&mut c);
    c.pause_input();
    c.handle_timeout(ms(150));
    assert!(!c.is_closed(), "the Pong may be waiting unread");
    c.resume_input();
    feed(&mut c, &[Frame::pong(ping[0].payload.clone())], ms(160));
    c.handle_timeout(ms(200));
    assert!(!c.is_closed());
}

#[test]
fn raw_connections_show_every_frame_and_answer_nothing() {
    let mut c = client(true);
    c.set_keepalive(Some(ms(10)), None, ms(0));
    assert_eq!(c.poll_timeout(), None, "a raw connection never pings");
    feed(
        &mut c,
        &[
            Frame::ping("p"),
            Frame::text("a").with_fin(false),
            Frame::continuation("b", true),
            Frame::close(Some(&CloseReason::new(4003u16, "x").unwrap())),
        ],
        ms(0),
    );
    let ops: Vec<OpCode> = events(&mut c)
        .into_iter()
        .map(|e| match e {
            Event::Frame(f) => f.opcode,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ops,
        [
            OpCode::Ping,
            OpCode::Text,
            OpCode::Continuation,
            OpCode::Close
        ]
    );
    assert!(transmit(&mut c).is_empty(), "no Pong, no echo");
    assert!(!c.is_closed());
    // The application answers the Close: that completes the handshake.
    c.send_frame(
        &Frame::close(Some(&CloseReason::new(4003u16, "x").unwrap())),
        ms(5),
    )
    .unwrap();
    assert_eq!(close_code(&transmit(&mut c)[0]), Some(4003));
    assert_eq!(c.outcome().unwrap().failure, None);
    assert_eq!(events(&mut c), [Event::Closed]);
}

#[test]
fn flush_accounting_counts_only_the_senders_bytes() {
    let mut c = client(false);
    c.send(&Message::text("abc")).unwrap(); // 2 + 4 + 3 bytes
    let target = c.outbox().queued();
    feed(&mut c, &[Frame::ping("12345")], ms(0)); // an 11-byte Pong goes ahead
    let mut buf = BytesMut::new();
    c.poll_transmit(&mut buf, 1 << 16);
    assert_eq!(buf.len(), 11 + 9);
    c.handle_written(11);
    assert_eq!(c.data_written(), 0);
    c.handle_written(5);
    assert_eq!(c.data_written(), 5);
    c.handle_written(4);
    assert_eq!(c.data_written(), target);
}

#[test]
fn unmasked_large_payloads_are_handed_out_without_a_copy() {
    let mut c = Connection::new(
        Config::new(Role::Server),
        Outbox::<Seq>::new(1 << 20),
        Vec::new(),
        ms(0),
    );
    let big = Bytes::from(vec![3u8; 50_000]);
    c.send(&Message::binary(big.clone())).unwrap();
    let mut buf = BytesMut::new();
    assert!(c.poll_transmit(&mut buf, 1 << 16).is_none());
    assert_eq!(&buf[..], &[0x82, 126, 0xc3, 0x50][..]); // 50,000 bytes, unmasked
    c.handle_written(buf.len());
    buf.clear();
    let direct = c
        .poll_transmit(&mut buf, 1 << 16)
        .expect("the payload itself");
    assert_eq!(direct.as_ptr(), big.as_ptr());
    c.handle_written(direct.len());
    assert_eq!(c.data_written(), c.outbox().queued());
}

#[test]
fn closing_a_closing_connection_changes_nothing() {
    let mut c = client(false);
    c.close(Some(CloseReason::new(4004u16, "first").unwrap()), ms(0));
    c.close(Some(CloseReason::new(4005u16, "second").unwrap()), ms(500));
    assert_eq!(c.poll_timeout(), Some(CLOSE_TIMEOUT));
    let sent = transmit(&mut c);
    assert_eq!(sent.len(), 1);
    assert_eq!(close_code(&sent[0]), Some(4004));
}

// ---- the property test ----

#[derive(Debug, Clone)]
enum Step {
    /// Server bytes arrive, cut at `cut` (the rest stays for a later read).
    Input(Vec<Frame>, usize),
    /// Raw garbage arrives.
    Garbage(Vec<u8>),
    Send(usize),
    /// The application sends an owned payload of `LARGE_SEND` bytes and this many more,
    /// fragmented at the given size if any (queued whole, cut as it is taken).
    SendLarge(usize, Option<usize>),
    /// The application writes the next piece of its streamed message (starting one if none
    /// is under way), the last one if `fin`.
    StreamPiece(usize, bool),
    /// The application drops its streamed message's writer midway.
    Abandon,
    SendFrame(Frame),
    Close(u16),
    /// The application drops the connection at once.
    Terminate,
    Transmit(usize, usize),
    Advance(u64),
    Events(usize),
    Pause(bool),
    Eof,
    /// The caller gives back idle memory.
    Trim,
}

fn arb_server_frame() -> impl Strategy<Value = Frame> {
    let p = proptest::collection::vec(any::<u8>(), 0..60);
    prop_oneof![
        4 => p.clone().prop_map(|p| Frame::text(String::from_utf8_lossy(&p).into_owned())),
        2 => p.clone().prop_map(Frame::binary),
        2 => p.clone().prop_map(Frame::ping),
        1 => p.clone().prop_map(Frame::pong),
        1 => p.clone().prop_map(|p| Frame::binary(p).with_fin(false)),
        1 => p.clone().prop_map(|p| Frame::continuation(p, true)),
        1 => (3000u16..5000).prop_map(|c| Frame::close(Some(&CloseReason::new(c, "r").unwrap()))),
        1 => Just(Frame::close(None)),
    ]
}

/// The longest prefix of `f`'s payload that is at most `max` bytes and, for a Text frame, still
/// whole characters: the application's text is valid UTF-8.
fn fit(f: &Frame, max: usize) -> usize {
    let mut n = f.payload.len().min(max);
    if f.opcode == OpCode::Text {
        while std::str::from_utf8(&f.payload[..n]).is_err() {
            n -= 1;
        }
    }
    n
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (proptest::collection::vec(arb_server_frame(), 1..6), any::<usize>())
            .prop_map(|(f, c)| Step::Input(f, c)),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Step::Garbage),
        3 => (0usize..3000).prop_map(Step::Send),
        1 => arb_server_frame()
            .prop_filter("whole messages and pings only: the application's own frames", |f| {
                f.fin && matches!(f.opcode, OpCode::Ping | OpCode::Pong | OpCode::Text | OpCode::Binary)
            })
            .prop_map(|f| Step::SendFrame(Frame { payload: f.payload.slice(..fit(&f, 125)), ..f })),
        1 => (0usize..3000, proptest::option::of(100usize..20_000))
            .prop_map(|(n, f)| Step::SendLarge(n, f)),
        2 => (0usize..2000, any::<bool>()).prop_map(|(n, fin)| Step::StreamPiece(n, fin)),
        1 => Just(Step::Abandon),
        1 => (3000u16..5000).prop_map(Step::Close),
        1 => Just(Step::Terminate),
        5 => (0usize..5000, 0usize..5000).prop_map(|(a, b)| Step::Transmit(a, b)),
        3 => (0u64..3000).prop_map(Step::Advance),
        4 => (0usize..4).prop_map(Step::Events),
        1 => any::<bool>().prop_map(Step::Pause),
        1 => Just(Step::Eof),
        1 => Just(Step::Trim),
    ]
}

/// Client frames as the server sees them, checked as they come: masked, well formed, nothing
/// after the Close.
struct Wire {
    bytes: BytesMut,
    decoder: Decoder,
    closes: usize,
    after_close: usize,
}

impl Wire {
    fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        while let Some(f) = self
            .decoder
            .decode(&mut self.bytes)
            .expect("the client wrote a broken frame")
        {
            if self.closes > 0 {
                self.after_close += 1;
            }
            if f.opcode == OpCode::Close {
                self.closes += 1;
            }
        }
    }
}

fn run(steps: Vec<Step>, raw: bool) -> Result<(), TestCaseError> {
    let mut c = Connection::new(
        Config {
            ping_interval: Some(ms(700)),
            ping_timeout: Some(ms(400)),
            ..config(raw)
        },
        Outbox::<Seq>::new(4096),
        Vec::new(),
        ms(0),
    );
    let mut now = ms(0);
    let mut pending_input = BytesMut::new();
    let mut wire = Wire {
        bytes: BytesMut::new(),
        decoder: Decoder::new(
            Role::Server,
            Limits {
                max_frame_size: usize::MAX,
                max_message_size: usize::MAX,
            },
        ),
        closes: 0,
        after_close: 0,
    };
    let mut unwritten = BytesMut::new();
    let mut closed_seen = false;
    let mut close_asked: Option<Duration> = None;
    let mut stream: Option<u64> = None;
    for step in steps {
        match step {
            Step::Input(frames, cut) => {
                let w = wire_of(&frames);
                pending_input.extend_from_slice(&w);
                let keep = cut % (pending_input.len() + 1);
                let mut now_in = pending_input.split_to(pending_input.len() - keep);
                if c.wants_read() {
                    c.handle_read(&mut now_in, now);
                    now_in.extend_from_slice(&pending_input);
                    pending_input = now_in;
                }
            }
            Step::Garbage(g) => {
                if c.wants_read() {
                    pending_input.extend_from_slice(&g);
                    let mut b = std::mem::take(&mut pending_input);
                    c.handle_read(&mut b, now);
                    pending_input = b;
                }
            }
            Step::Send(n) => {
                let _ = c.send(&Message::binary(vec![9u8; n]));
            }
            Step::SendLarge(n, fragment) => {
                let data = Bytes::from(vec![8u8; crate::outbox::LARGE_SEND + n]);
                let _ = c.outbox().send_data(
                    OpCode::Binary,
                    0,
                    crate::outbox::Payload::Owned(&data),
                    fragment,
                );
            }
            Step::StreamPiece(n, fin) => {
                let (id, op) = match stream {
                    Some(id) => (id, OpCode::Continuation),
                    None => (c.outbox().new_stream(), OpCode::Binary),
                };
                let piece = vec![6u8; n];
                let r =
                    c.outbox()
                        .send_fragment(id, op, fin, crate::outbox::Payload::Borrowed(&piece));
                // A piece refused for good (the connection stopped taking data) ends the
                // stream; one refused for room is retried by a later step.
                stream = match r {
                    Ok(_) if !fin => Some(id),
                    Err(Refused::Full) => stream,
                    _ => None,
                };
            }
            Step::Abandon => {
                if let Some(id) = stream.take() {
                    if close_asked.is_none() && c.outbox().is_open() {
                        close_asked = Some(now);
                    }
                    c.outbox().abandon_stream(id, now);
                    // As the contract asks of whoever shares the outbox: the connection is
                    // told the queue changed (a transmit with no room only looks at it).
                    prop_assert!(c.poll_transmit(&mut unwritten, 0).is_none());
                }
            }
            Step::Terminate => {
                c.terminate();
                prop_assert!(c.is_finished(), "terminated but not finished");
                prop_assert!(c.outbox().is_stopped());
            }
            Step::SendFrame(f) => {
                let _ = c.send_frame(&f, now);
            }
            Step::Close(code) => {
                if close_asked.is_none() && c.outbox().is_open() {
                    close_asked = Some(now);
                }
                c.close(Some(CloseReason::new(code, "").unwrap()), now);
            }
            Step::Transmit(max, write) => {
                if let Some(d) = c.poll_transmit(&mut unwritten, max) {
                    // A direct payload is written whole before anything else.
                    c.handle_written(unwritten.len());
                    wire.push(&unwritten);
                    unwritten.clear();
                    c.handle_written(d.len());
                    wire.push(&d);
                }
                let n = write.min(unwritten.len());
                let w = unwritten.split_to(n);
                c.handle_written(n);
                wire.push(&w);
            }
            Step::Advance(d) => {
                now += ms(d);
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
            }
            Step::Events(n) => {
                for _ in 0..n {
                    match c.poll_event() {
                        Some(Event::Closed) => {
                            prop_assert!(c.outcome().is_some(), "Closed before the outcome");
                            prop_assert!(!closed_seen, "two Closed events");
                            closed_seen = true;
                        }
                        Some(_) => prop_assert!(!closed_seen, "an event after Closed"),
                        None => break,
                    }
                }
            }
            Step::Pause(p) => {
                if p {
                    c.pause_input();
                } else {
                    c.resume_input();
                }
            }
            Step::Eof => c.handle_eof(now),
            Step::Trim => c.trim(),
        }
        // After every step:
        // what the connection holds of its own output is bounded whatever the peer sent;
        prop_assert!(
            c.tx.pong
                .as_deref()
                .is_none_or(|p| p.len() <= transmit::MAX_PONGS && p.iter().all(|p| p.len() <= 125))
        );
        prop_assert!(c.tx.close.as_ref().is_none_or(|p| p.len() <= 125));
        // the queue never holds more than its capacity plus one message (a large one cut
        // into fragments of at least 100 bytes adds at most 14 bytes of header to each);
        prop_assert!(
            c.outbox().len() <= 4096 + (crate::outbox::LARGE_SEND + 3000) * 114 / 100 + 14
        );
        // nothing goes out after our Close;
        prop_assert_eq!(wire.after_close, 0);
        prop_assert!(wire.closes <= 1);
        // a close asked for is over by its deadline;
        if let Some(at) = close_asked
            && now >= at + CLOSE_TIMEOUT
        {
            prop_assert!(c.is_closed(), "close asked at {at:?} still open at {now:?}");
        }
        // an open-ended state always has a timer or waits for input or output;
        if c.is_closed() && !c.is_finished() {
            prop_assert!(
                c.poll_timeout().is_some(),
                "a closed connection must have a deadline to finish by"
            );
        }
        // and the data written never passes what was queued.
        prop_assert!(c.data_written() <= c.outbox().queued());
    }
    // Draining the events at the end: the outcome comes before Closed.
    while let Some(e) = c.poll_event() {
        if e == Event::Closed {
            prop_assert!(c.outcome().is_some());
        }
    }
    Ok(())
}

fn wire_of(frames: &[Frame]) -> BytesMut {
    wire(frames)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_interleavings_keep_every_rule(steps in proptest::collection::vec(arb_step(), 1..80), raw: bool) {
        run(steps, raw)?;
    }
}

/// A queue shared the way the tokio session shares it: the application marks it when it
/// queues something, and the connection's lock clears the mark.
struct Marked {
    outbox: Outbox<Seq>,
    mark: bool,
}

impl Queue for Marked {
    type Entropy = Seq;
    type Guard<'a> = &'a mut Outbox<Seq>;
    fn lock(&mut self) -> &mut Outbox<Seq> {
        self.mark = false;
        &mut self.outbox
    }
    fn touched(&mut self) -> bool {
        self.mark
    }
}

#[test]
fn a_marked_queue_is_looked_at_whatever_else_the_look_finds() {
    let mut c = Connection::new(
        config(false),
        Marked {
            outbox: Outbox::new(1 << 20),
            mark: false,
        },
        Vec::new(),
        ms(0),
    );
    let mut out = BytesMut::new();
    assert!(c.poll_transmit(&mut out, 1 << 16).is_none());
    assert!(out.is_empty(), "nothing queued, nothing sent");
    // The application queues a message and marks the queue.
    c.queue().outbox.send(OpCode::Text, b"one").unwrap();
    c.queue().mark = true;
    c.poll_transmit(&mut out, 1 << 16);
    assert_eq!(out.len(), 2 + 4 + 3, "the message went out");
    c.handle_written(out.len());
    out.clear();
    // Unmarked, the connection may skip looking; marked again, it sees the next one.
    c.queue().outbox.send(OpCode::Text, b"two").unwrap();
    c.queue().mark = true;
    c.poll_transmit(&mut out, 1 << 16);
    assert_eq!(out.len(), 2 + 4 + 3);
}
