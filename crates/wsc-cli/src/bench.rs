//! `wsc bench`: a load generator for echo servers. Each connection sends a message, waits for
//! its echo and records the round trip; a rate spreads sends evenly instead.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use wsc::{CloseReason, Message};

use crate::opts::{ConnectOpts, parse_duration};
use crate::{Failure, failure};

#[derive(Args, Debug)]
pub struct BenchOpts {
    /// The echo server's URL.
    pub url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 10)]
    pub connections: usize,
    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 32)]
    pub size: usize,
    /// Messages per second over all connections; 0 sends as fast as echoes come back.
    #[arg(short = 'r', long, default_value_t = 0)]
    pub rate: u64,
    /// How long to run (e.g. 10s).
    #[arg(short = 'd', long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    #[command(flatten)]
    pub connect: ConnectOpts,
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(opts: BenchOpts, outer: &ConnectOpts) -> Result<(), Failure> {
    if opts.connections == 0 {
        return Err(Failure::new(2, "--connections must be at least 1"));
    }
    let connect = if opts.connect.headers.is_empty() && opts.connect.protocols.is_empty() {
        outer.clone()
    } else {
        opts.connect.clone()
    };
    let client = connect.client()?;
    let mut sessions = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        sessions.push(
            connect
                .request(&client, &opts.url)?
                .connect()
                .await
                .map_err(|e| failure(&e))?,
        );
    }
    let counters = Arc::new(Counters::default());
    let payload: Message = if opts.binary {
        Message::binary(vec![0x5a; opts.size])
    } else {
        Message::text("x".repeat(opts.size))
    };
    let start = Instant::now();
    let deadline = start + opts.duration;
    let interval = (opts.rate > 0)
        .then(|| Duration::from_secs_f64(opts.connections as f64 / opts.rate as f64));
    let mut tasks = Vec::new();
    let conns = opts.connections;
    for (i, mut s) in sessions.into_iter().enumerate() {
        let counters = counters.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            if let Some(iv) = interval {
                // Stagger connections across one interval.
                tokio::time::sleep(iv.mul_f64(i as f64 / conns as f64)).await;
            }
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    next += iv;
                    tokio::time::sleep_until(next.into()).await;
                }
                let t = Instant::now();
                if s.send(payload.clone()).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                match s.recv().await {
                    Some(Ok(_)) => {
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        counters.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            let _ = s.close(CloseReason::normal()).await;
            lat
        }));
    }
    let progress = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = counters.messages.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>5.1}s  {n:>10} round trips  {:>9} msg/s   ",
                    start.elapsed().as_secs_f64(),
                    n - last
                );
                let _ = std::io::stderr().flush();
                last = n;
            }
        })
    };
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    progress.abort();
    eprintln!();
    let secs = start
        .elapsed()
        .as_secs_f64()
        .min(opts.duration.as_secs_f64())
        .max(1e-9);
    all.sort_unstable();
    let n = all.len();
    let pct = |p: f64| -> String {
        if n == 0 {
            return "-".into();
        }
        let i = ((p / 100.0) * (n - 1) as f64).round() as usize;
        format_us(all[i.min(n - 1)])
    };
    let mib = (n as f64 * opts.size as f64 * 2.0) / (1024.0 * 1024.0) / secs;
    println!(
        "connections {}  message {} B  duration {:.1}s",
        opts.connections, opts.size, secs
    );
    println!(
        "round trips {n}  ({:.0} msg/s, {mib:.2} MiB/s both ways)  errors {}",
        n as f64 / secs,
        counters.errors.load(Ordering::Relaxed)
    );
    println!(
        "latency p50 {}  p90 {}  p99 {}  max {}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        all.last().map(|v| format_us(*v)).unwrap_or("-".into())
    );
    if counters.errors.load(Ordering::Relaxed) > 0 && n == 0 {
        return Err(Failure::new(1, "no round trip completed"));
    }
    Ok(())
}

fn format_us(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", f64::from(us) / 1000.0)
    } else {
        format!("{us}µs")
    }
}
