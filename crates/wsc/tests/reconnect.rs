//! Reconnecting sessions against a real server process that is killed and restarted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wsc::{
    Client, CloseCode, ConnectionEvent, Error, Events, Message, ReconnectConfig, WhileDisconnected,
};

async fn wait_for(
    events: &mut Events,
    what: &str,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => continue,
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

async fn next_text(rc: &mut wsc::Reconnecting) -> String {
    match tokio::time::timeout(Duration::from_secs(20), rc.recv()).await {
        Ok(Some(Ok(m))) => m.as_text().unwrap().to_owned(),
        other => panic!("no message: {other:?}"),
    }
}

#[tokio::test]
async fn comes_back_after_the_server_restarts_and_delivers_queued_messages_in_order() {
    let port = common::free_port();
    let port_s = port.to_string();
    let mut peer = Some(common::python_server(&["--port", &port_s]));
    let hooks = Arc::new(AtomicU32::new(0));
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(400))
        .while_disconnected(WhileDisconnected::Queue(100))
        .on_connect({
            let hooks = hooks.clone();
            move |sender| {
                let n = hooks.fetch_add(1, Ordering::SeqCst) + 1;
                async move { sender.send(format!("hello #{n}")).await }
            }
        });
    let mut rc = Client::new()
        .reconnecting(format!("ws://127.0.0.1:{port}/"), cfg)
        .unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "open", |e| matches!(e, ConnectionEvent::Open)).await;
    assert_eq!(next_text(&mut rc).await, "hello #1");
    rc.send("m1").await.unwrap();
    assert_eq!(next_text(&mut rc).await, "m1");

    // The server dies mid-stream: the reader hears why.
    drop(peer.take());
    wait_for(&mut events, "closed", |e| {
        matches!(e, ConnectionEvent::Closed { .. })
    })
    .await;
    match tokio::time::timeout(Duration::from_secs(5), rc.recv()).await {
        Ok(Some(Err(e @ Error::ClosedAbnormally))) => {
            assert_eq!(
                e.chain().to_string(),
                "connection closed without a Close frame"
            )
        }
        other => panic!("{other:?}"),
    }
    // Sends while it is down are queued.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rc.sender().is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for m in ["m2", "m3", "m4"] {
        rc.send(m).await.unwrap();
    }
    wait_for(&mut events, "a failed attempt", |e| {
        matches!(e, ConnectionEvent::Closed { error: Some(_), .. })
    })
    .await;

    // It comes back on the same port.
    let _peer = common::python_server(&["--port", &port_s]);
    wait_for(&mut events, "reopen", |e| {
        matches!(e, ConnectionEvent::Open)
    })
    .await;
    assert_eq!(
        next_text(&mut rc).await,
        "hello #2",
        "the hook runs first after a reconnect"
    );
    for m in ["m2", "m3", "m4"] {
        assert_eq!(next_text(&mut rc).await, m);
    }
    assert_eq!(hooks.load(Ordering::SeqCst), 2);

    // A close the caller asks for is final, and says what the server answered.
    let answer = rc
        .close(wsc::CloseReason::new(CloseCode::NORMAL, "bye").unwrap())
        .await
        .unwrap();
    assert_eq!(answer.map(|r| r.code()), Some(CloseCode::NORMAL));
    wait_for(&mut events, "closed", |e| {
        matches!(e, ConnectionEvent::Closed { .. })
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), rc.recv())
            .await
            .unwrap()
            .is_none()
    );
    // ...and no attempt follows it.
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        assert!(
            !matches!(
                e,
                ConnectionEvent::Connecting { .. } | ConnectionEvent::Waiting { .. }
            ),
            "reconnected after close: {e:?}"
        );
    }
    assert!(matches!(rc.send("late").await, Err(Error::Closed(_))));
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_growing_delays() {
    let port = common::free_port(); // nothing listens here
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_millis(40))
        .max_delay(Duration::from_millis(200))
        .max_attempts(Some(5))
        .jitter(false)
        .while_disconnected(WhileDisconnected::Reject);
    let start = Instant::now();
    let mut rc = Client::new()
        .reconnecting(format!("ws://127.0.0.1:{port}/"), cfg.clone())
        .unwrap();
    let mut events = rc.events();
    assert!(matches!(rc.send("x").await, Err(Error::Disconnected)));
    let mut delays = Vec::new();
    let mut shown = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            e @ ConnectionEvent::Closed { .. } => shown.push((e.to_string(), format!("{e:?}"))),
            ConnectionEvent::Waiting { delay, .. } => delays.push(delay),
            e @ ConnectionEvent::GaveUp { attempts: 5, .. } => {
                assert!(
                    e.to_string()
                        .starts_with("gave up after 5 failed attempts: connecting to")
                );
                break;
            }
            _ => {}
        }
    }
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [40, 80, 160, 200], "doubling, capped at max_delay");
    // Each failed attempt says where and why, whole, in Display and in Debug.
    let why = format!("connecting to 127.0.0.1:{port}: Connection refused (os error 111)");
    assert_eq!(shown.len(), 5);
    for (display, debug) in &shown {
        assert_eq!(display, &format!("closed: {why}"));
        assert!(debug.contains(&why), "{debug}");
    }
    assert!(start.elapsed() >= Duration::from_millis(480));
    // Gave up: the last item says why, then the stream ends, and sends fail with it.
    match tokio::time::timeout(Duration::from_secs(5), rc.recv()).await {
        Ok(Some(Err(e @ Error::Io { .. }))) => assert_eq!(e.chain().to_string(), why),
        other => panic!("{other:?}"),
    }
    assert!(rc.recv().await.is_none());
    assert!(matches!(rc.send("x").await, Err(Error::Io { .. })));

    // With jitter, each wait is at most its cap.
    let mut rc = Client::new()
        .reconnecting(format!("ws://127.0.0.1:{port}/"), cfg.jitter(true))
        .unwrap();
    let mut events = rc.events();
    let mut n = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ConnectionEvent::Waiting { delay, attempt } => {
                n += 1;
                let cap = Duration::from_millis(40 * 2u64.pow(attempt - 2))
                    .min(Duration::from_millis(200));
                assert!(delay <= cap, "{delay:?} > {cap:?}");
            }
            ConnectionEvent::GaveUp { .. } => break,
            _ => {}
        }
    }
    assert_eq!(n, 4);
    assert!(matches!(rc.recv().await, Some(Err(Error::Io { .. }))));
    assert!(rc.recv().await.is_none());
}

#[tokio::test]
async fn try_again_later_is_waited_out_and_reconnected() {
    let peer = common::python_server(&[]);
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_millis(100))
        .jitter(false);
    let mut rc = Client::new().reconnecting(peer.url("/"), cfg).unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "open", |e| matches!(e, ConnectionEvent::Open)).await;
    rc.send("close:1013:busy").await.unwrap();
    let closed = wait_for(&mut events, "closed", |e| {
        matches!(e, ConnectionEvent::Closed { .. })
    })
    .await;
    assert!(
        matches!(closed, ConnectionEvent::Closed { reason: Some(r), .. } if r.code() == CloseCode::TRY_AGAIN_LATER)
    );
    let waiting = wait_for(&mut events, "waiting", |e| {
        matches!(e, ConnectionEvent::Waiting { .. })
    })
    .await;
    assert!(
        matches!(waiting, ConnectionEvent::Waiting { delay, .. } if delay == Duration::from_millis(100))
    );
    wait_for(&mut events, "reopen", |e| {
        matches!(e, ConnectionEvent::Open)
    })
    .await;
    rc.send(Message::text("again")).await.unwrap();
    assert_eq!(next_text(&mut rc).await, "again");
    rc.close(wsc::CloseReason::normal()).await.unwrap();
}

/// A server whose every connection opens and is closed at once (1001 on arrival) is a failed
/// attempt each time: `max_attempts` gives up instead of reconnecting forever.
#[tokio::test]
async fn connections_that_end_at_once_count_as_failed_attempts() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Ok(session) = wsc::server::accept(s, &Default::default()).await {
                    let _ = session
                        .close(wsc::CloseReason::new(CloseCode::GOING_AWAY, "bye").unwrap())
                        .await;
                }
            });
        }
    });
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(100))
        .max_attempts(Some(4));
    let rc = Client::new().reconnecting(url.as_str(), cfg).unwrap();
    let mut events = rc.events();
    let t = Instant::now();
    let e = wait_for(&mut events, "GaveUp", |e| {
        matches!(e, ConnectionEvent::GaveUp { .. })
    })
    .await;
    assert!(
        matches!(e, ConnectionEvent::GaveUp { attempts: 4, .. }),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(accepted.load(Ordering::Relaxed), 4);
}

/// Dropping every handle while the server is down ends the background task: when the server
/// comes back, nothing connects to it.
#[tokio::test]
async fn dropping_every_handle_while_disconnected_stops_the_task() {
    let port = common::free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let hooks = Arc::new(AtomicU32::new(0));
    let h = hooks.clone();
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(50))
        .on_connect(move |_| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        });
    let rc = Client::new().reconnecting(url.as_str(), cfg).unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "a refused attempt", |e| {
        matches!(e, ConnectionEvent::Waiting { .. })
    })
    .await;
    drop(rc);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The server comes back: nobody connects.
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(1), l.accept()).await;
    assert!(
        r.is_err(),
        "the task connected after every handle was dropped"
    );
    assert_eq!(hooks.load(Ordering::Relaxed), 0);
    // And its event channel is closed.
    loop {
        match tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
            Ok(None) => break,
            Ok(_) => continue,
            Err(_) => panic!("the task is still alive"),
        }
    }
}

#[cfg(feature = "json")]
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Tick {
    seq: u32,
    note: String,
}

/// The reconnecting session has a session's API: typed messages both ways, `flush`, errors as
/// items of `recv`, and `close(reason)` that waits for the server's answer.
#[cfg(feature = "json")]
#[tokio::test]
async fn the_reconnecting_session_has_the_session_api() {
    let peer = common::python_server(&[]);
    let client = Client::builder()
        .converter(wsc::convert::Json)
        .build()
        .unwrap();
    let cfg = ReconnectConfig::default().while_disconnected(WhileDisconnected::Queue(1024));
    let mut rc = client.reconnecting(peer.url("/"), cfg).unwrap();
    let tick = Tick {
        seq: 7,
        note: "typed".into(),
    };
    rc.send_serialized(&tick).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), rc.flush())
        .await
        .expect("flush ends")
        .unwrap();
    let back: Tick = tokio::time::timeout(Duration::from_secs(10), rc.receive_deserialized())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, tick);
    // A message that is not a Tick is an error that keeps the message.
    rc.send("not json").await.unwrap();
    match rc.receive_deserialized::<Tick>().await {
        Err(Error::Deserialize { message, .. }) => assert_eq!(message.as_text(), Some("not json")),
        other => panic!("{other:?}"),
    }
    // close(reason) waits for the server's Close and returns it.
    let t = Instant::now();
    let answer = rc
        .close(wsc::CloseReason::new(CloseCode::from(4001), "done").unwrap())
        .await
        .unwrap();
    assert_eq!(answer.map(|r| r.code().as_u16()), Some(4001));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(rc.recv().await.is_none());
    // Later calls say the same; sends and flushes are refused.
    let again = rc.close(wsc::CloseReason::normal()).await.unwrap();
    assert_eq!(again.map(|r| r.code().as_u16()), Some(4001));
    assert!(matches!(rc.send("x").await, Err(Error::Closed(_))));
    assert!(matches!(rc.flush().await, Err(Error::Closed(_))));
}

/// An error that ends a connection (here a message over the limit) reaches `recv` as an item,
/// and the session goes on with the next connection.
#[tokio::test]
async fn an_error_that_ends_a_connection_is_an_item_of_recv() {
    let peer = common::python_server(&[]);
    let client = Client::builder().max_message_size(1000).build().unwrap();
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_millis(20))
        .stable_after(Duration::ZERO);
    let mut rc = client.reconnecting(peer.url("/big?n=5000"), cfg).unwrap();
    let mut events = rc.events();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(10), rc.recv()).await {
            Ok(Some(Err(Error::MessageTooBig {
                size, max: 1000, ..
            }))) => assert!(size > 1000),
            other => panic!("{other:?}"),
        }
    }
    // The same failures, in the events.
    let e = wait_for(&mut events, "a closed connection", |e| {
        matches!(e, ConnectionEvent::Closed { .. })
    })
    .await;
    assert!(e.to_string().starts_with("closed"), "{e}");
    // Closing while disconnected or connected ends it at once, with no connection left.
    let t = Instant::now();
    let _ = rc.close(wsc::CloseReason::normal()).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    while let Some(item) = rc.recv().await {
        assert!(item.is_err(), "{item:?}");
    }
}

/// `close` while no connection is open returns at once with no answer; with `Reject`, a flush
/// while disconnected fails at once instead of waiting.
#[tokio::test]
async fn close_and_flush_while_disconnected() {
    let port = common::free_port(); // nothing listens here
    let cfg = ReconnectConfig::default()
        .initial_delay(Duration::from_secs(30))
        .while_disconnected(WhileDisconnected::Reject);
    let rc = Client::new()
        .reconnecting(format!("ws://127.0.0.1:{port}/"), cfg)
        .unwrap();
    assert!(matches!(rc.flush().await, Err(Error::Disconnected)));
    let t = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), rc.close(wsc::CloseReason::normal()))
        .await
        .expect("close ends while waiting to reconnect")
        .unwrap();
    assert!(answer.is_none());
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// What was sent before `close` reaches the server ahead of the Close, with the reason given
/// (the server here is wsc's own server role, which records what it got).
#[tokio::test]
async fn close_sends_what_was_sent_before_it_then_the_reason() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = wsc::server::accept(tcp, &Default::default()).await.unwrap();
        let mut got = Vec::new();
        while let Some(Ok(m)) = s.recv().await {
            got.push(m.as_text().unwrap_or_default().to_owned());
        }
        (got, s.try_close_reason())
    });
    let rc = Client::new()
        .reconnecting(format!("ws://{addr}/"), ReconnectConfig::default())
        .unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "open", |e| matches!(e, ConnectionEvent::Open)).await;
    for m in ["a", "b", "c"] {
        rc.send(m).await.unwrap();
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        rc.close(wsc::CloseReason::new(CloseCode::from(4002), "enough").unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer.map(|r| r.code().as_u16()), Some(4002));
    let (got, reason) = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ["a", "b", "c"]);
    let reason = reason.unwrap();
    assert_eq!((reason.code().as_u16(), reason.reason()), (4002, "enough"));
}

/// A server that answers every upgrade request with `head` (status line and headers) and
/// no body, and sends each connection's arrival time.
async fn refusing_server(head: String) -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = tx.send(Instant::now());
            let head = head.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!("{head}\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, rx)
}

/// 403 and 404 say the client is at fault: the session ends with the refusal after one
/// attempt, as the last item of `recv`, and sends fail with it.
#[tokio::test]
async fn refusals_that_retrying_cannot_fix_end_the_session() {
    for (head, status) in [
        ("HTTP/1.1 403 Forbidden", 403),
        ("HTTP/1.1 404 Not Found", 404),
    ] {
        let (url, mut arrivals) = refusing_server(head.to_owned()).await;
        let cfg = ReconnectConfig::default().initial_delay(Duration::from_millis(10));
        let mut rc = Client::new().reconnecting(url.as_str(), cfg).unwrap();
        let mut events = rc.events();
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), rc.recv()).await {
            Ok(Some(Err(Error::HandshakeRefused { status: s, .. }))) => assert_eq!(s, status),
            other => panic!("{status}: {other:?}"),
        }
        assert!(rc.recv().await.is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            rc.send("x").await,
            Err(Error::HandshakeRefused { status: s, .. }) if s == status
        ));
        let gave_up = wait_for(&mut events, "GaveUp", |e| {
            matches!(e, ConnectionEvent::GaveUp { .. })
        })
        .await;
        assert!(
            gave_up.to_string().contains(&format!("status {status}")),
            "{gave_up}"
        );
        // One attempt, and none after it.
        arrivals.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(arrivals.try_recv().is_err(), "{status} was retried");
    }
}

/// 429 and 503 with `Retry-After` are retried after that long (seconds or an HTTP date),
/// capped by `max_delay`, instead of after the (much shorter) backoff.
#[tokio::test]
async fn retry_after_on_429_and_503_is_honoured_and_capped() {
    // An HTTP date two seconds ahead, made when its case starts (whole seconds: the wait is
    // at least one second).
    let in_two_seconds = || {
        let t = std::time::SystemTime::now() + Duration::from_secs(2);
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}",
            http_date(secs)
        )
    };
    let cases: [(Option<&str>, Duration, Duration, Duration); 3] = [
        // head (None: the date), max_delay, least gap, most gap
        (
            Some("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1"),
            Duration::from_secs(30),
            Duration::from_millis(950),
            Duration::from_millis(2500),
        ),
        (
            Some("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600"),
            Duration::from_millis(1200),
            Duration::from_millis(1150),
            Duration::from_millis(2700),
        ),
        (
            None,
            Duration::from_secs(30),
            Duration::from_millis(950),
            Duration::from_millis(3500),
        ),
    ];
    for (head, max_delay, least, most) in cases {
        let head = head.map_or_else(in_two_seconds, str::to_owned);
        let (url, mut arrivals) = refusing_server(head.clone()).await;
        let cfg = ReconnectConfig::default()
            .initial_delay(Duration::from_millis(10))
            .max_delay(max_delay)
            .max_attempts(Some(2));
        let mut rc = Client::new().reconnecting(url.as_str(), cfg).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), arrivals.recv())
            .await
            .unwrap()
            .unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .unwrap()
            .unwrap();
        let gap = second - first;
        assert!(gap >= least && gap <= most, "{head}: {gap:?}");
        // Given up after the second: the refusal is the last item.
        match tokio::time::timeout(Duration::from_secs(5), rc.recv()).await {
            Ok(Some(Err(Error::HandshakeRefused { status, .. }))) => {
                assert!(status == 429 || status == 503)
            }
            other => panic!("{other:?}"),
        }
        assert!(rc.recv().await.is_none());
    }
}

/// IMF-fixdate for `secs` since the epoch (for a `Retry-After` the test server sends).
fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant), for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A server's 1008 (policy violation) ends the session: the last item of `recv` is the
/// close, sends fail with it, and nothing reconnects.
#[tokio::test]
async fn a_policy_violation_close_ends_the_session_with_it() {
    let peer = common::python_server(&[]);
    let cfg = ReconnectConfig::default().initial_delay(Duration::from_millis(10));
    let mut rc = Client::new().reconnecting(peer.url("/"), cfg).unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "open", |e| matches!(e, ConnectionEvent::Open)).await;
    rc.send("before").await.unwrap();
    rc.send("close:1008:not allowed").await.unwrap();
    let t = Instant::now();
    assert_eq!(next_text(&mut rc).await, "before");
    match tokio::time::timeout(Duration::from_secs(5), rc.recv()).await {
        Ok(Some(Err(Error::Closed(Some(r))))) => {
            assert_eq!(
                (r.code(), r.reason()),
                (CloseCode::VIOLATED_POLICY, "not allowed")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(rc.recv().await.is_none());
    assert!(t.elapsed() < Duration::from_secs(5));
    match rc.send("after").await {
        Err(Error::Closed(Some(r))) => assert_eq!(r.code(), CloseCode::VIOLATED_POLICY),
        other => panic!("{other:?}"),
    }
    assert!(matches!(rc.flush().await, Err(Error::Closed(Some(_)))));
    let e = wait_for(&mut events, "GaveUp", |e| {
        matches!(e, ConnectionEvent::GaveUp { .. })
    })
    .await;
    assert!(
        matches!(e, ConnectionEvent::GaveUp { attempts: 1, .. }),
        "{e:?}"
    );
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        assert!(!matches!(e, ConnectionEvent::Connecting { .. }), "{e:?}");
    }
}

/// An application that never reads while the server sends as fast as it can: the
/// connection's own incoming bound stops reading from the server (the server's sends stall
/// after a bounded amount), while sends, `flush` and `close` keep working and memory stays
/// bounded.
#[tokio::test]
async fn an_application_that_never_reads_can_still_send_flush_and_close() {
    use std::sync::atomic::AtomicU64;
    const FLOOD: u64 = 200_000; // 1 KiB each: 200 MiB if nothing pushed back
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let server = tokio::spawn({
        let sent = sent.clone();
        async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let session = wsc::server::accept(tcp, &Default::default()).await.unwrap();
            let (tx, mut rx) = session.split();
            tokio::spawn(async move {
                for i in 0..FLOOD {
                    if tx.send(Message::binary(vec![i as u8; 1024])).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
            let mut got = Vec::new();
            while let Some(Ok(m)) = rx.recv().await {
                if let Some(t) = m.as_text() {
                    got.push(t.to_owned());
                }
            }
            got
        }
    });
    let close_timeout = Duration::from_secs(2);
    let client = Client::builder()
        .close_timeout(close_timeout)
        .build()
        .unwrap();
    let rss_before = common::peak_rss_kib();
    let rc = client
        .reconnecting(url.as_str(), ReconnectConfig::default())
        .unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "open", |e| matches!(e, ConnectionEvent::Open)).await;
    // The server sends; nobody reads.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unread = sent.load(Ordering::Relaxed);
    assert!(unread >= 1000, "only {unread} messages were sent");
    for m in ["a", "b", "c"] {
        tokio::time::timeout(Duration::from_secs(2), rc.send(m))
            .await
            .expect("a send ends while nothing is read")
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), rc.flush())
        .await
        .expect("flush ends while nothing is read")
        .unwrap();
    // The server is held back: its sends have stalled far short of the flood.
    let stalled = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = sent.load(Ordering::Relaxed);
    assert!(
        later < FLOOD / 4,
        "{later} of {FLOOD} sent: no backpressure"
    );
    assert!(
        later - stalled < 100,
        "still sending: {stalled} then {later}"
    );

    let t = Instant::now();
    let closed = tokio::time::timeout(close_timeout * 3, rc.close(wsc::CloseReason::normal()))
        .await
        .expect("close ends while nothing is read");
    assert!(
        t.elapsed() < close_timeout + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    eprintln!("close took {:?}: {closed:?}", t.elapsed());
    // The server's Close waits behind messages nobody reads: the close may time out, as a
    // session's does.
    assert!(
        matches!(closed, Ok(_) | Err(Error::Timeout(wsc::TimeoutKind::Close))),
        "{closed:?}"
    );
    let got = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server's session ends")
        .unwrap();
    assert_eq!(got, ["a", "b", "c"]);
    let grown = common::peak_rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
    eprintln!("unread after 1 s: {unread}; server stalled at {later}; RSS +{grown} KiB");
}

/// Against a server that never reads, sends of 1 MiB messages stop being accepted soon
/// (the queue is bounded in bytes: 64 KiB here), memory stays bounded, and `close` ends
/// within the close timeout, failing a send that was waiting.
#[tokio::test]
async fn a_server_that_never_reads_bounds_sends_in_bytes_and_close_in_time() {
    let peer = common::python_server(&[]);
    let close_timeout = Duration::from_secs(2);
    let client = Client::builder()
        .outgoing_queue_capacity(64 * 1024)
        .close_timeout(close_timeout)
        .build()
        .unwrap();
    let rc = client
        .reconnecting(peer.url("/stall"), ReconnectConfig::default())
        .unwrap();
    let mut events = rc.events();
    wait_for(&mut events, "open", |e| matches!(e, ConnectionEvent::Open)).await;
    let rss_before = common::peak_rss_kib();
    let mut accepted = 0u32;
    while accepted < 1100 {
        // A fresh buffer each time: queued messages cost real memory.
        let m = Message::binary(vec![accepted as u8; 1 << 20]);
        match tokio::time::timeout(Duration::from_secs(1), rc.send(m)).await {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => panic!("{e:?}"),
            Err(_) => break, // waiting for room: the bound holds
        }
    }
    let grown = common::peak_rss_kib().saturating_sub(rss_before);
    eprintln!("accepted {accepted} MiB; RSS +{grown} KiB");
    assert!(accepted <= 32, "{accepted} MiB accepted by a 64 KiB queue");
    assert!(grown < 96 * 1024, "peak RSS grew by {grown} KiB");

    // A send waiting for room when the session closes fails.
    let waiting = tokio::spawn({
        let s = rc.sender();
        async move { s.send(Message::binary(vec![1u8; 1 << 20])).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    let t = Instant::now();
    let closed = tokio::time::timeout(close_timeout * 3, rc.close(wsc::CloseReason::normal()))
        .await
        .expect("close ends against a server that never reads");
    assert!(
        t.elapsed() < close_timeout + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    eprintln!("close took {:?}: {closed:?}", t.elapsed());
    assert!(
        matches!(closed, Err(Error::Timeout(wsc::TimeoutKind::Close))),
        "{closed:?}"
    );
    let sent = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting send ends")
        .unwrap();
    assert!(matches!(sent, Err(Error::Closed(_))), "{sent:?}");
}
