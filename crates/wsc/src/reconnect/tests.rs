//! The supervisor's schedule on paused tokio time: backoff, jitter, `stable_after`,
//! `max_attempts`, `Retry-After` and stopping while waiting, with connections that fail at
//! once or open over an in-memory pipe to wsc's server role. Time is virtual, so every
//! figure below is exact.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::{CloseCode, CloseReason};

fn refused() -> Error {
    Error::io(
        crate::IoContext::Connecting {
            addr: "127.0.0.1:9".parse().unwrap(),
        },
        std::io::ErrorKind::ConnectionRefused.into(),
    )
}

/// Every attempt fails at once with `error()`.
fn failing(error: fn() -> Error) -> supervisor::Connector {
    Arc::new(move || Box::pin(async move { Err(error()) }))
}

/// Each attempt opens over a pipe; the server closes with `code` after `lasted(n)` (n: the
/// connection's number, 0-based).
fn opening(code: u16, lasted: fn(u32) -> Duration) -> (supervisor::Connector, Arc<AtomicU32>) {
    sending_then_closing(0, code, lasted)
}

/// As [`opening`], the server sending `messages` messages ("n.i") first.
fn sending_then_closing(
    messages: u32,
    code: u16,
    lasted: fn(u32) -> Duration,
) -> (supervisor::Connector, Arc<AtomicU32>) {
    let opened = Arc::new(AtomicU32::new(0));
    let count = opened.clone();
    let connect: supervisor::Connector = Arc::new(move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let s = crate::server::accept(theirs, &Default::default())
                    .await
                    .unwrap();
                for i in 0..messages {
                    s.send(format!("{n}.{i}")).await.unwrap();
                }
                tokio::time::sleep(lasted(n)).await;
                let _ = s.close(CloseReason::new(code, "").unwrap()).await;
            });
            Client::new().request("ws://pipe/").connect_on(ours).await
        })
    });
    (connect, opened)
}

fn start_with(config: ReconnectConfig, connect: supervisor::Connector) -> Reconnecting {
    // A fixed sequence stands in for the random jitter factor.
    let seq = Mutex::new([0.5, 0.25, 1.0, 0.0].into_iter().cycle());
    start(
        &Client::new(),
        config,
        connect,
        Box::new(move || seq.lock().unwrap().next().unwrap()),
    )
}

/// Every event with the virtual time it came at, until the events end.
async fn timeline(mut events: Events) -> Vec<(Duration, String)> {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while let Some(e) = events.recv().await {
        seen.push((t0.elapsed(), format!("{e:?}")));
    }
    seen
}

fn waits(t: &[(Duration, String)]) -> Vec<String> {
    t.iter()
        .filter(|(_, e)| e.starts_with("Waiting"))
        .map(|(_, e)| e.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_to_max_delay_and_gives_up_after_max_attempts() {
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_secs(1))
        .max_delay(Duration::from_secs(5))
        .max_attempts(Some(5))
        .jitter(false);
    let mut rc = start_with(cfg, failing(refused));
    let t = timeline(rc.events()).await;
    assert_eq!(
        waits(&t),
        [
            "Waiting { delay: 1s, attempt: 2 }",
            "Waiting { delay: 2s, attempt: 3 }",
            "Waiting { delay: 4s, attempt: 4 }",
            "Waiting { delay: 5s, attempt: 5 }",
        ]
    );
    let (at, last) = t.last().unwrap();
    assert!(last.starts_with("GaveUp { attempts: 5"), "{last}");
    assert_eq!(*at, Duration::from_secs(12));
    // The reader hears why, then the end; sends fail with the same error.
    assert!(matches!(rc.recv().await, Some(Err(Error::Io { .. }))));
    assert!(rc.recv().await.is_none());
    assert!(matches!(rc.send("x").await, Err(Error::Io { .. })));
}

#[tokio::test(start_paused = true)]
async fn jitter_scales_each_wait_within_its_cap() {
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_secs(4))
        .max_delay(Duration::from_secs(60))
        .max_attempts(Some(5));
    let rc = start_with(cfg, failing(refused));
    // Caps 4, 8, 16, 32 s times 0.5, 0.25, 1.0, 0.0.
    assert_eq!(
        waits(&timeline(rc.events()).await),
        [
            "Waiting { delay: 2s, attempt: 2 }",
            "Waiting { delay: 2s, attempt: 3 }",
            "Waiting { delay: 16s, attempt: 4 }",
            "Waiting { delay: 0ns, attempt: 5 }",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stable_connection_starts_the_count_afresh() {
    // Connections 0 and 1 last 10 s (stable), then each lasts 1 s (failed attempts).
    let (connect, opened) = opening(1001, |n| Duration::from_secs(if n < 2 { 10 } else { 1 }));
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_secs(1))
        .max_delay(Duration::from_secs(100))
        .stable_after(Duration::from_secs(5))
        .max_attempts(Some(3))
        .jitter(false);
    let mut rc = start_with(cfg, connect);
    let events = rc.events();
    tokio::spawn(async move { while rc.recv().await.is_some() {} });
    let rc_events = timeline(events).await;
    assert_eq!(
        waits(&rc_events),
        [
            // After each stable connection: the initial delay.
            "Waiting { delay: 1s, attempt: 1 }",
            "Waiting { delay: 1s, attempt: 1 }",
            // Then connections that end at once count up, and the third in a row is the last.
            "Waiting { delay: 1s, attempt: 2 }",
            "Waiting { delay: 2s, attempt: 3 }",
        ]
    );
    assert!(
        rc_events
            .last()
            .unwrap()
            .1
            .starts_with("GaveUp { attempts: 3")
    );
    assert_eq!(opened.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn close_while_waiting_ends_at_once() {
    let cfg = ReconnectConfig::default().initial_delay(Duration::from_secs(3600));
    let mut rc = start_with(cfg, failing(refused));
    let mut events = rc.events();
    while !matches!(events.recv().await, Some(ConnectionEvent::Waiting { .. })) {}
    let t0 = Instant::now();
    assert!(rc.close(CloseReason::normal()).await.unwrap().is_none());
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(
        rc.recv().await.is_none(),
        "closed by the caller: no error item"
    );
    assert!(matches!(rc.send("x").await, Err(Error::Closed(Some(_)))));
    assert!(events.recv().await.is_none(), "the task has ended");
}

#[tokio::test(start_paused = true)]
async fn close_while_connecting_ends_at_once() {
    let never: supervisor::Connector = Arc::new(|| Box::pin(std::future::pending()));
    let rc = start_with(ReconnectConfig::default(), never);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    assert!(rc.close(CloseReason::normal()).await.unwrap().is_none());
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_and_capped_by_max_delay() {
    fn busy() -> Error {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        Error::HandshakeRefused {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            headers: Box::new(headers),
            body: bytes::Bytes::new(),
        }
    }
    let cfg = ReconnectConfig::default()
        .max_delay(Duration::from_secs(60))
        .max_attempts(Some(3));
    let rc = start_with(cfg.clone(), failing(busy));
    assert_eq!(
        waits(&timeline(rc.events()).await),
        [
            "Waiting { delay: 60s, attempt: 2 }",
            "Waiting { delay: 60s, attempt: 3 }",
        ]
    );
    let rc = start_with(cfg.max_delay(Duration::from_secs(600)), failing(busy));
    assert_eq!(
        waits(&timeline(rc.events()).await)[0],
        "Waiting { delay: 120s, attempt: 2 }"
    );
}

#[tokio::test(start_paused = true)]
async fn a_policy_close_ends_the_session_with_it_and_a_hook_can_override() {
    let (connect, opened) = opening(1008, |_| Duration::from_secs(1));
    let mut rc = start_with(ReconnectConfig::default(), connect);
    match rc.recv().await {
        Some(Err(Error::Closed(Some(r)))) => assert_eq!(r.code(), CloseCode::VIOLATED_POLICY),
        other => panic!("{other:?}"),
    }
    assert!(rc.recv().await.is_none());
    assert!(matches!(rc.send("x").await, Err(Error::Closed(Some(r))) if r.code().as_u16() == 1008));
    assert_eq!(opened.load(Ordering::SeqCst), 1);

    // A hook that retries everything: it reconnects, up to max_attempts.
    let (connect, opened) = opening(1008, |_| Duration::from_secs(1));
    let cfg = ReconnectConfig::default()
        .max_attempts(Some(3))
        .retry_policy(|_| Retry::After(Duration::from_secs(2)));
    let mut rc = start_with(cfg, connect);
    let t0 = Instant::now();
    match rc.recv().await {
        Some(Err(Error::Closed(Some(r)))) => assert_eq!(r.code().as_u16(), 1008),
        other => panic!("{other:?}"),
    }
    assert!(rc.recv().await.is_none());
    assert_eq!(opened.load(Ordering::SeqCst), 3);
    // Three connections of 1 s, two waits of 2 s (and a handshake's instant each).
    assert!(t0.elapsed() >= Duration::from_secs(7) && t0.elapsed() < Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn the_next_connection_waits_until_the_last_ones_messages_are_read() {
    let (connect, opened) = sending_then_closing(3, 1001, |_| Duration::from_secs(1));
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_secs(1))
        .jitter(false);
    let mut rc = start_with(cfg, connect);
    // Nobody reads: the first connection ends, and no other opens.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    // Reading its messages lets the next one open; its messages follow in order.
    let mut got = Vec::new();
    while got.len() < 6 {
        match rc.recv().await {
            Some(Ok(m)) => got.push(m.as_text().unwrap().to_owned()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, ["0.0", "0.1", "0.2", "1.0", "1.1", "1.2"]);
    assert!(opened.load(Ordering::SeqCst) >= 2);
    rc.close(CloseReason::normal()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_never_reads_does_not_stop_reconnects_after_errors_alone() {
    // Connections that drop without a Close leave only their error unread: they do not
    // hold the next connection back, and only the newest error is kept.
    let dropping: supervisor::Connector = Arc::new(|| {
        Box::pin(async {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let s = crate::server::accept(theirs, &Default::default())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                s.terminate();
            });
            Client::new().request("ws://pipe/").connect_on(ours).await
        })
    });
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_secs(1))
        .max_attempts(Some(4))
        .jitter(false);
    let mut rc = start_with(cfg, dropping);
    let gave_up = timeline(rc.events()).await;
    assert!(
        gave_up
            .last()
            .unwrap()
            .1
            .starts_with("GaveUp { attempts: 4")
    );
    // Read only now: one error (the newest), then the end.
    assert!(matches!(
        rc.recv().await,
        Some(Err(Error::ClosedAbnormally))
    ));
    assert!(rc.recv().await.is_none());
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Reconnecting>();
    send_sync::<ReconnectingSender>();
    send_sync::<Events>();
    send_sync::<ReconnectConfig>();
    send_sync::<ConnectionEvent>();
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_reader_is_gone_is_still_read_for_the_senders() {
    let done = Arc::new(AtomicU32::new(0));
    let flag = done.clone();
    let connect: supervisor::Connector = Arc::new(move || {
        let flag = flag.clone();
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let s = crate::server::accept(theirs, &Default::default())
                    .await
                    .unwrap();
                // 2 MiB: far over the connection's incoming bounds and the pipe.
                for _ in 0..2048 {
                    s.send(crate::Message::binary(vec![0u8; 1024]))
                        .await
                        .unwrap();
                }
                flag.store(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            });
            Client::new().request("ws://pipe/").connect_on(ours).await
        })
    });
    let rc = start_with(ReconnectConfig::default(), connect);
    let sender = rc.sender();
    drop(rc);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(done.load(Ordering::SeqCst), 1, "the server's sends stalled");
    assert!(sender.is_connected());
    sender.send("still here").await.unwrap();
    sender.flush().await.unwrap();
}
