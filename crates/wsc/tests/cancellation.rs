//! Cancel safety against an independent peer, the Python `websockets` echo server: each public
//! async method of a session has its future dropped at pseudo-random points (a fixed seed, so a
//! failure replays), and what the server echoes must be exactly what was reported sent, in
//! order, with no close code but the one the test asked for. The server checks every frame
//! (a Continuation first fails the connection with 1002, broken UTF-8 with 1007).

mod common;

use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::{Duration, Instant};

#[cfg(feature = "json")]
use serde::{Deserialize, Serialize};
use wsc::{Client, CloseCode, CloseReason, Error, Message, OpCode, Receiver, Sender};

/// Every test ends well within this, or fails.
const BOUND: Duration = Duration::from_secs(60);

/// A small, seeded generator (xorshift64*): the same cancellation points on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `fut` until it completes or is cancelled at a point `rng` picks: after 1 to 3 polls,
/// with the runtime run in between (the driver writes and reads meanwhile), or when a timer of
/// 0 to 300 µs fires. `None`: it was dropped unfinished.
async fn cancel_at_random<F: Future>(rng: &mut Rng, fut: F) -> Option<F::Output> {
    if rng.below(2) == 0 {
        let polls = 1 + rng.below(3);
        let mut fut = std::pin::pin!(fut);
        for i in 0..polls {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            if let Poll::Ready(v) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
                return Some(v);
            }
        }
        None
    } else {
        let d = Duration::from_micros(rng.below(300));
        tokio::time::timeout(d, fut).await.ok()
    }
}

/// A client whose outgoing queue fills after a few hundred bytes, so sends and writes wait
/// (and can be cancelled while they do).
fn client() -> Client {
    let builder = Client::builder().outgoing_queue_capacity(256);
    #[cfg(feature = "json")]
    let builder = builder.converter(wsc::convert::Json);
    builder.build().unwrap()
}

async fn connect(peer: &common::Peer, client: &Client) -> (Sender, Receiver) {
    client.connect(peer.url("/")).await.unwrap().split()
}

/// The last message of a test: once its echo is back, every echo before it is too (the
/// server answers a Close at once, ahead of echoes it has not sent yet).
const END: &str = "<end>";

/// Reads every message up to [`END`]; an end before it (the server closing with a code of its
/// own, 1002 or 1007, or a failure) fails the test.
fn collect(tx: &Sender, mut rx: Receiver) -> tokio::task::JoinHandle<(Vec<Message>, Receiver)> {
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let Some(m) = rx.recv().await else {
                panic!("the session ended early: {:?}", tx.close_reason().await);
            };
            let m = m.expect("the session ended with an error");
            if m.as_text() == Some(END) {
                return (got, rx);
            }
            got.push(m);
        }
    })
}

/// Sends [`END`], waits for the echoes, closes normally and checks the server answered with
/// 1000 (it saw nothing to fail on) and sent nothing more. Returns the echoes.
async fn finish(
    tx: &Sender,
    echoed: tokio::task::JoinHandle<(Vec<Message>, Receiver)>,
) -> Vec<Message> {
    tx.send(END).await.unwrap();
    let (got, mut rx) = echoed.await.unwrap();
    close_clean(tx).await;
    assert!(rx.recv().await.is_none(), "nothing after the last echo");
    got
}

/// Closes normally and checks the server answered with 1000.
async fn close_clean(tx: &Sender) {
    let peer = tx
        .close(CloseReason::new(CloseCode::NORMAL, "done").unwrap())
        .await
        .expect("the close handshake completes");
    assert_eq!(peer.map(|r| r.code()), Some(CloseCode::NORMAL));
    assert_eq!(tx.close_reason().await.code(), CloseCode::NORMAL);
}

/// A message of `len` bytes saying which it is; text with two- and three-byte characters.
fn text(i: usize, len: usize) -> String {
    let mut s = format!("#{i}:");
    let mut k = 0;
    while s.len() < len {
        s.push(['a', 'é', '€', 'z'][k % 4]);
        k += 1;
    }
    s
}

async fn bounded<F: Future>(fut: F) -> F::Output {
    let start = Instant::now();
    let out = tokio::time::timeout(BOUND, fut)
        .await
        .expect("the test ran past its time bound");
    assert!(start.elapsed() < BOUND);
    out
}

#[tokio::test]
async fn send_cancelled_at_random_points_sends_whole_messages_or_nothing() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        let mut rng = Rng::new(0x5e4d);
        let mut sent = Vec::new();
        let mut cancelled = 0;
        for i in 0..400 {
            // Small and large (queued without a copy), through each way of sending.
            let len = match rng.below(10) {
                0 => 20_000 + rng.below(20_000) as usize,
                _ => rng.below(600) as usize,
            };
            let m = text(i, len);
            let done = match rng.below(4) {
                0 => cancel_at_random(&mut rng, tx.send(m.clone())).await,
                1 => cancel_at_random(&mut rng, tx.send_text(&m)).await,
                2 => cancel_at_random(&mut rng, tx.send_binary(m.as_bytes())).await,
                _ => cancel_at_random(&mut rng, tx.send_fragmented(m.clone(), 97)).await,
            };
            match done {
                Some(r) => {
                    r.unwrap();
                    sent.push(m);
                }
                None => cancelled += 1,
            }
        }
        assert!(cancelled > 20, "only {cancelled} sends were cancelled");
        assert!(sent.len() > 50, "only {} sends completed", sent.len());
        let got: Vec<Vec<u8>> = finish(&tx, echoed)
            .await
            .into_iter()
            .map(|m| m.as_bytes().to_vec())
            .collect();
        let want: Vec<Vec<u8>> = sent.into_iter().map(String::into_bytes).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the echoes differ from what was reported sent");
    })
    .await;
}

#[cfg(feature = "json")]
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    n: usize,
    body: String,
}

#[cfg(feature = "json")]
#[tokio::test]
async fn send_serialized_cancelled_at_random_points_sends_whole_values_or_nothing() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        let mut rng = Rng::new(0x5e71);
        let mut sent = Vec::new();
        for n in 0..300 {
            let item = Item {
                n,
                body: text(n, rng.below(500) as usize),
            };
            if let Some(r) = cancel_at_random(&mut rng, tx.send_serialized(&item)).await {
                r.unwrap();
                sent.push(item);
            }
        }
        assert!(sent.len() > 30 && sent.len() < 290, "{} sent", sent.len());
        let got: Vec<Item> = finish(&tx, echoed)
            .await
            .iter()
            .map(|m| wsc::convert::deserialize(&wsc::convert::Json, m).unwrap())
            .collect();
        assert_eq!(got, sent);
    })
    .await;
}

#[tokio::test]
async fn flush_cancelled_at_random_points_loses_nothing() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        let mut rng = Rng::new(0xf105);
        let mut sent = Vec::new();
        let mut cancelled = 0;
        for i in 0..300 {
            let m = text(i, rng.below(2_000) as usize);
            tx.send(m.clone()).await.unwrap();
            sent.push(m);
            if cancel_at_random(&mut rng, tx.flush()).await.is_none() {
                cancelled += 1;
            }
        }
        assert!(cancelled > 30, "only {cancelled} flushes were cancelled");
        // A flush after the cancelled ones still completes.
        tx.flush().await.unwrap();
        let got: Vec<String> = finish(&tx, echoed)
            .await
            .into_iter()
            .map(|m| m.as_text().unwrap().to_owned())
            .collect();
        assert!(got == sent, "the echoes differ from what was sent");
    })
    .await;
}

/// Cuts `bytes` at random places, inside characters too.
fn chunks(rng: &mut Rng, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (1 + rng.below(300) as usize).min(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// The regression: a write cancelled while it waits for room, then retried, must neither put
/// a Continuation first on the wire (the server fails that with 1002) nor report a text chunk
/// cut inside a character as `InvalidUtf8`.
#[tokio::test]
async fn message_writer_write_cancelled_and_retried_sends_each_chunk_once() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        let mut rng = Rng::new(0x3417e);
        let mut sent = Vec::new();
        let mut cancelled = 0;
        for i in 0..100 {
            let opcode = if i % 3 == 2 {
                OpCode::Binary
            } else {
                OpCode::Text
            };
            let body = text(i, 200 + rng.below(3_000) as usize);
            // Something queued first, so even the first write may wait for room.
            tx.send_text(&text(i, 300)).await.unwrap();
            sent.push(Message::text(text(i, 300)));
            let mut w = tx.message_writer(opcode).await.unwrap();
            for chunk in chunks(&mut rng, body.as_bytes()) {
                // Retried until it completes, as a caller whose timeout fired would.
                loop {
                    match cancel_at_random(&mut rng, w.write(&chunk)).await {
                        Some(r) => break r.unwrap(),
                        None => cancelled += 1,
                    }
                }
            }
            assert_eq!(w.finish().await.unwrap(), body.len() as u64);
            sent.push(match opcode {
                OpCode::Text => Message::text(body),
                _ => Message::binary(body.into_bytes()),
            });
        }
        assert!(cancelled > 15, "only {cancelled} writes were cancelled");
        let got = finish(&tx, echoed).await;
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the echoes differ from what was written");
    })
    .await;
}

/// Polls `fut` once and drops it: `true` if it was still pending.
fn pending_once<F: Future>(fut: F) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::pin!(fut).poll(&mut cx).is_pending()
}

/// A regression, without chance: the first write of a message, dropped while the queue is
/// full and then retried, still opens the message (the server fails a Continuation first
/// with 1002).
#[tokio::test]
async fn a_first_write_cancelled_and_retried_opens_the_message() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        // 400 bytes fill the queue past its 256, and nothing runs the driver before the poll.
        tx.send(vec![0u8; 400]).await.unwrap();
        let mut w = tx.message_writer(OpCode::Binary).await.unwrap();
        assert!(pending_once(w.write(b"head")), "the write waited");
        w.write(b"head").await.unwrap();
        w.write(b"tail").await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 8);
        let got = finish(&tx, echoed).await;
        assert_eq!(
            got,
            [
                Message::binary(vec![0u8; 400]),
                Message::binary(&b"headtail"[..])
            ]
        );
    })
    .await;
}

/// A regression, without chance: a text chunk cut inside a character, dropped while the queue
/// is full and retried, is not reported as `InvalidUtf8` (the dropped write had fed the
/// UTF-8 check already).
#[tokio::test]
async fn a_text_write_cancelled_and_retried_is_checked_once() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        let euro = "€".as_bytes();
        tx.send(vec![1u8; 400]).await.unwrap();
        let mut w = tx.message_writer(OpCode::Text).await.unwrap();
        let first = [b"h", &euro[..1]].concat();
        assert!(pending_once(w.write(&first)), "the write waited");
        w.write(&first).await.unwrap();
        w.write(&euro[1..]).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 4);
        let got = finish(&tx, echoed).await;
        assert_eq!(got, [Message::binary(vec![1u8; 400]), Message::text("h€")]);
    })
    .await;
}

/// `finish` never waits for room once the message has started, so a finish that was polled
/// at all has completed: cancelling it cannot lose the message's end.
#[tokio::test]
async fn message_writer_finish_cancelled_at_random_points_completes_once_polled() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, rx) = connect(&peer, &client()).await;
        let echoed = collect(&tx, rx);
        let mut rng = Rng::new(0xf15);
        let mut sent = Vec::new();
        let mut unsent_empty = 0;
        for i in 0..200 {
            // A full queue ahead of the finish.
            tx.send_text(&text(i, 400)).await.unwrap();
            sent.push(text(i, 400));
            let mut w = tx.message_writer(OpCode::Text).await.unwrap();
            let body = if i % 4 == 3 {
                String::new() // an empty message: waits for room like any message
            } else {
                // More than the queue's capacity: the queue is full when `finish` starts.
                let b = text(i, 300 + rng.below(300) as usize);
                w.write(b.as_bytes()).await.unwrap();
                b
            };
            match cancel_at_random(&mut rng, w.finish()).await {
                Some(r) => {
                    assert_eq!(r.unwrap(), body.len() as u64);
                    sent.push(body);
                }
                None => {
                    assert!(body.is_empty(), "a started message's finish waited");
                    unsent_empty += 1;
                }
            }
        }
        assert!(
            unsent_empty > 5,
            "only {unsent_empty} finishes were cancelled"
        );
        let got: Vec<String> = finish(&tx, echoed)
            .await
            .into_iter()
            .map(|m| m.as_text().unwrap().to_owned())
            .collect();
        assert!(got == sent, "the echoes differ from what was finished");
    })
    .await;
}

/// Sends `n` messages of random sizes (from a task of its own, pausing now and then so that
/// the reader finds nothing to read at times) and returns them.
fn send_many(tx: Sender, n: usize, max: u64, seed: u64) -> tokio::task::JoinHandle<Vec<Vec<u8>>> {
    tokio::spawn(async move {
        let mut rng = Rng::new(seed);
        let mut sent = Vec::new();
        for i in 0..n {
            let m = text(i, rng.below(max) as usize).into_bytes();
            tx.send(m.clone()).await.unwrap();
            sent.push(m);
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sent
    })
}

#[tokio::test]
async fn recv_cancelled_at_random_points_loses_nothing() {
    let peer = common::python_server(&[]);
    bounded(async {
        let (tx, mut rx) = connect(&peer, &client()).await;
        let sending = send_many(tx.clone(), 500, 3_000, 0x4ec7);
        let mut rng = Rng::new(0x4ec8);
        let mut got = Vec::new();
        let mut cancelled = 0;
        while got.len() < 500 {
            match cancel_at_random(&mut rng, rx.recv()).await {
                Some(m) => got.push(m.unwrap().unwrap().into_bytes().to_vec()),
                None => cancelled += 1,
            }
        }
        assert!(cancelled > 20, "only {cancelled} receives were cancelled");
        assert!(got == sending.await.unwrap(), "received differs from sent");
        close_clean(&tx).await;
        assert!(rx.recv().await.is_none());
    })
    .await;
}

/// Chunked reads: `recv_stream` and each `next_chunk` cancelled at random points; the chunks
/// read put every message back together, in order.
#[tokio::test]
async fn recv_stream_and_chunk_reads_cancelled_at_random_points_lose_nothing() {
    let peer = common::python_server(&[]);
    bounded(async {
        let client = Client::builder()
            .stream_incoming(true)
            .outgoing_queue_capacity(256)
            .build()
            .unwrap();
        let (tx, mut rx) = connect(&peer, &client).await;
        // Up to 200 KiB: several 64 KiB pieces per frame.
        let sending = send_many(tx.clone(), 120, 200_000, 0x57e);
        let mut rng = Rng::new(0x57f);
        let mut got = Vec::new();
        let mut cancelled = 0;
        while got.len() < 120 {
            let Some(m) = cancel_at_random(&mut rng, rx.recv_stream()).await else {
                cancelled += 1;
                continue;
            };
            let mut m = m.expect("the session ended early").unwrap();
            let mut body = Vec::new();
            loop {
                match cancel_at_random(&mut rng, m.next_chunk()).await {
                    Some(Some(chunk)) => body.extend_from_slice(&chunk.unwrap()),
                    Some(None) => break,
                    None => cancelled += 1,
                }
            }
            got.push(body);
        }
        assert!(cancelled > 20, "only {cancelled} reads were cancelled");
        let sent = sending.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "received differs from sent");
        close_clean(&tx).await;
    })
    .await;
}

/// `close` asks for the close in its first poll; a cancelled one has asked, and waiting again
/// (`close` or `close_reason`) gets the same outcome: the server answers with our reason.
#[tokio::test]
async fn close_cancelled_at_random_points_still_closes_cleanly() {
    let peer = common::python_server(&[]);
    bounded(async {
        let client = client();
        let mut rng = Rng::new(0xc105e);
        let mut cancelled = 0;
        for round in 0..25 {
            let (tx, rx) = connect(&peer, &client).await;
            let echoed = collect(&tx, rx);
            let mut sent = Vec::new();
            for i in 0..rng.below(20) as usize {
                let m = text(i, rng.below(1_000) as usize);
                tx.send(m.clone()).await.unwrap();
                sent.push(Message::text(m));
            }
            tx.send(END).await.unwrap();
            let (got, mut rx) = echoed.await.unwrap();
            assert!(
                got == sent,
                "round {round}: the echoes differ from what was sent"
            );
            let reason = CloseReason::new(CloseCode::NORMAL, format!("bye {round}")).unwrap();
            let peer_reason = match cancel_at_random(&mut rng, tx.close(reason.clone())).await {
                Some(r) => r,
                None => {
                    cancelled += 1;
                    assert!(!tx.is_open(), "a polled close has asked for the close");
                    assert_eq!(tx.close_reason().await, reason);
                    tx.close(CloseReason::normal()).await
                }
            };
            // The server echoes the Close it got: ours, asked for once.
            assert_eq!(peer_reason.unwrap(), Some(reason.clone()));
            assert_eq!(tx.close_reason().await, reason);
            assert!(
                rx.recv().await.is_none(),
                "round {round}: the session ends cleanly"
            );
            assert!(matches!(tx.send("late").await, Err(Error::Closed(_))));
        }
        assert!(cancelled > 5, "only {cancelled} closes were cancelled");
    })
    .await;
}

/// A `websocket` future dropped while its closure waits drops the session, which closes
/// normally (1000) after what the closure had sent. The peer is a wsc server here: it reports
/// the code it received.
#[tokio::test]
async fn websocket_dropped_while_its_closure_waits_closes_normally() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let session = wsc::server::accept(stream, &Default::default())
                .await
                .unwrap();
            let (tx, mut rx) = session.split();
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await {
                got.push(m.unwrap());
            }
            (got, tx.close_reason().await)
        });
        let client = Client::new();
        let run = client.websocket(url.as_str(), async |s: &mut wsc::Session| {
            s.sender().send("before").await?;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(200), run)
                .await
                .is_err()
        );
        let (got, reason) = server.await.unwrap();
        assert_eq!(got, [Message::text("before")]);
        assert_eq!(reason.code(), CloseCode::NORMAL);
    })
    .await;
}
