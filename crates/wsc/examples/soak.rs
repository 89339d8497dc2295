//! Scale and soak: many concurrent sessions from one process, kept alive by pings, with the
//! client's resident memory sampled as they live; `scripts/soak` runs it.
//!
//! ```text
//! soak server 127.0.0.1:9300 127.0.0.2:9300 ...   # counts clean closes; prints them on /stats
//! soak client SESSIONS SECONDS PING_SECS ADDR...  # opens, samples RSS every 10 s, closes all
//! ```
//!
//! The client prints one line per sample and a summary; it exits non-zero when a session
//! failed, when a session did not close cleanly, or when the server saw fewer clean closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wsc::server::{AcceptConfig, accept};
use wsc::{Client, CloseReason, Message};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn server(addrs: Vec<String>) {
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in addrs {
        let l = tokio::net::TcpListener::bind(&a).await.expect("bind");
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let closed = closed.clone();
                tokio::spawn(async move {
                    let Ok(mut session) = accept(s, &AcceptConfig::default()).await else {
                        return;
                    };
                    if session.call().url().path() == "/stats" {
                        let n = closed.load(Ordering::Relaxed);
                        let _ = session.send(format!("closed={n}")).await;
                        let _ = session.close(CloseReason::normal()).await;
                        return;
                    }
                    while let Some(Ok(_)) = session.recv().await {}
                    if session
                        .try_close_reason()
                        .is_some_and(|r| r.code() == wsc::CloseCode::NORMAL)
                    {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }));
    }
    println!("READY");
    for t in tasks {
        let _ = t.await;
    }
}

async fn client(n: usize, secs: u64, ping: u64, addrs: Vec<String>) -> bool {
    let client = Client::builder()
        .ping_interval(Some(Duration::from_secs(ping)))
        .ping_timeout(Duration::from_secs(ping * 4))
        .build()
        .unwrap();
    let base = rss_kib();
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(n);
    // Opened a few hundred at a time.
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let mut opening = Vec::new();
        for &i in chunk {
            let url = format!("ws://{}/s{i}", addrs[i % addrs.len()]);
            let c = client.clone();
            opening.push(tokio::spawn(async move { c.connect(url).await }));
        }
        for o in opening {
            sessions.push(o.await.unwrap().expect("connect"));
        }
    }
    let opened = rss_kib();
    println!(
        "opened {n} sessions in {:.1}s: {} B each",
        start.elapsed().as_secs_f64(),
        (opened - base) * 1024 / n as u64
    );
    let mut samples = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(secs))).await;
        let rss = rss_kib();
        let each = (rss.saturating_sub(base)) * 1024 / n as u64;
        let alive = sessions
            .iter()
            .filter(|s| s.try_close_reason().is_none())
            .count();
        println!(
            "t={:>4}s rss={rss} KiB per_session={each} B alive={alive}",
            t0.elapsed().as_secs()
        );
        samples.push(each);
    }
    let failed = sessions
        .iter()
        .filter(|s| s.try_close_reason().is_some())
        .count();
    // Close them all, concurrently.
    let t = Instant::now();
    let mut closing = Vec::new();
    for s in sessions {
        closing.push(tokio::spawn(async move {
            let r = s.close(CloseReason::normal()).await;
            let mut s = s;
            while s.recv().await.is_some() {}
            r.is_ok()
        }));
    }
    let mut clean = 0;
    for c in closing {
        clean += usize::from(c.await.unwrap());
    }
    println!(
        "closed {clean} of {n} cleanly in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Give the server a moment to count the last closes, then ask it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stats = Client::new()
        .connect(format!("ws://{}/stats", addrs[0]))
        .await
        .unwrap();
    let seen = match stats.recv().await {
        Some(Ok(Message::Text(t))) => t
            .as_str()
            .strip_prefix("closed=")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let _ = stats.close(CloseReason::normal()).await;
    let first = samples.first().copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    println!(
        "summary: sessions={n} open_each={} B first_sample={first} B last_sample={last} B max_sample={max} B failed={failed} closed_clean={clean} server_saw={seen}",
        (opened - base) * 1024 / n as u64
    );
    failed == 0 && clean == n && seen >= n
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("server") => rt.block_on(server(args[1..].to_vec())),
        Some("client") if args.len() >= 5 => {
            let n = args[1].parse().expect("SESSIONS");
            let secs = args[2].parse().expect("SECONDS");
            let ping = args[3].parse().expect("PING_SECS");
            if !rt.block_on(client(n, secs, ping, args[4..].to_vec())) {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: soak server ADDR... | soak client SESSIONS SECONDS PING_SECS ADDR..."
            );
            std::process::exit(2);
        }
    }
}
