//! `wsc-bench`: wsc against tokio-tungstenite, tokio-websockets, fastwebsockets and a plain
//! `TcpStream` (the ceiling), side by side in one run. `scripts/bench` runs the whole suite and
//! writes `bench/RESULTS.md`; `scripts/bench --smoke` is the seconds-long CI check.
//!
//! Servers and clients are separate processes: the server (raw tokio TCP, one thread) never
//! shares a core with the client, callgrind counts the client alone, and peak RSS is the
//! client's.
#![forbid(unsafe_code)]

mod clients;
mod servers;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use clap::{Parser, Subcommand};
use clients::Lib;
use servers::Kind;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve one kind of load on a free port (prints `PORT n`).
    Server {
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Run one client once (prints `RESULT …`).
    Client {
        #[arg(long, value_enum)]
        lib: Lib,
        #[arg(long)]
        case: String,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long)]
        port: u16,
    },
    /// The mask row alone: GB/s of each masking kernel this CPU has, on 64 KiB in cache.
    Mask,
    /// The whole suite.
    Run {
        /// Repetitions (medians are reported): five, because on a small VM a single run of a
        /// throughput case now and then lands in a mode twice as slow (seen for every client).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// A seconds-long check that every client and case works; no timings kept.
        #[arg(long)]
        smoke: bool,
        /// Skip the callgrind rows.
        #[arg(long)]
        no_callgrind: bool,
        /// Where to write the markdown report.
        #[arg(long, default_value = "bench/RESULTS.md")]
        out: String,
    },
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Server { kind, size, count } => {
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            rt().block_on(servers::serve(kind, size, count)).unwrap();
        }
        Cmd::Client {
            lib,
            case,
            size,
            count,
            port,
        } => {
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            if case == "contended" {
                // Its own multi-thread runtime; `count` 16 B messages per task, `size` 1 MiB ones.
                let (secs, worst) = clients::contended(port, count, size as u64);
                println!("RESULT {secs} {worst} {}", clients::peak_rss_kib());
                return;
            }
            let r = rt();
            let t = Instant::now();
            let line = match case.as_str() {
                "recv" => {
                    let n = r.block_on(clients::recv(lib, port, size, count));
                    assert_eq!(n, count, "{lib:?} received {n} of {count}");
                    format!("{} {}", t.elapsed().as_secs_f64(), n)
                }
                "send" => {
                    let n = r.block_on(clients::send(lib, port, size, count));
                    format!("{} {}", t.elapsed().as_secs_f64(), n)
                }
                "rtt" => {
                    // Every sample, so that the runner can pool interleaved slices.
                    let v = r.block_on(clients::rtt(lib, port, count));
                    let samples: Vec<String> = v.iter().map(|n| n.to_string()).collect();
                    println!("SAMPLES {}", samples.join(" "));
                    format!("{}", v.len())
                }
                "deflate-wsc" | "deflate-yawc" => {
                    let n = r.block_on(clients::deflate_echo(&case[8..], port, size, count));
                    format!("{} {}", t.elapsed().as_secs_f64(), n)
                }
                "idle" | "parked" => format!(
                    "{}",
                    r.block_on(clients::idle(lib, port, count as usize, case == "parked"))
                ),
                other => panic!("unknown case {other}"),
            };
            println!("RESULT {line} {}", clients::peak_rss_kib());
        }
        Cmd::Mask => println!("{}", mask_table(25)),
        Cmd::Run {
            reps,
            smoke,
            no_callgrind,
            out,
        } => run(
            if smoke { 1 } else { reps },
            smoke,
            no_callgrind || smoke,
            &out,
        ),
    }
}

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> std::path::PathBuf {
    std::env::current_exe().unwrap()
}

/// The CPU servers run on; clients run on the others. Left to the scheduler, a client and its
/// server sometimes shared a core, which moved throughput rows by up to 40 % between runs.
const SERVER_CPU: usize = 1;

/// This binary, pinned with `taskset` to `cpus` when the machine has two cores or more and
/// taskset is there (util-linux); unpinned otherwise.
fn pinned(cpus: &str) -> Command {
    static TASKSET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let usable = *TASKSET.get_or_init(|| {
        std::thread::available_parallelism().is_ok_and(|n| n.get() > SERVER_CPU)
            && Command::new("taskset")
                .args(["-c", "0", "true"])
                .output()
                .is_ok_and(|o| o.status.success())
    });
    if usable {
        let mut c = Command::new("taskset");
        c.args(["-c", cpus]).arg(exe());
        c
    } else {
        Command::new(exe())
    }
}

fn server_cmd() -> Command {
    pinned(&SERVER_CPU.to_string())
}

fn client_cmd() -> Command {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others: Vec<String> = (0..n)
        .filter(|&c| c != SERVER_CPU)
        .map(|c| c.to_string())
        .collect();
    pinned(&others.join(","))
}

fn server(kind: Kind, size: usize, count: u64) -> Server {
    let kind = format!("{kind:?}").to_lowercase();
    let mut child = server_cmd()
        .args([
            "server",
            "--kind",
            &kind,
            "--size",
            &size.to_string(),
            "--count",
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    Server(child, port)
}

fn lib_arg(lib: Lib) -> String {
    format!("{lib:?}")
        .chars()
        .enumerate()
        .fold(String::new(), |mut s, (i, c)| {
            if c.is_uppercase() && i > 0 {
                s.push('-');
            }
            s.push(c.to_ascii_lowercase());
            s
        })
}

fn client_args(lib: Lib, case: &str, size: usize, count: u64, port: u16) -> Vec<String> {
    [
        "client",
        "--lib",
        &lib_arg(lib),
        "--case",
        case,
        "--size",
        &size.to_string(),
        "--count",
        &count.to_string(),
        "--port",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs one client process and parses the numbers on its output line starting with `prefix`
/// (`RESULT` or `SAMPLES`).
fn run_client<T: std::str::FromStr>(
    lib: Lib,
    case: &str,
    size: usize,
    count: u64,
    port: u16,
    prefix: &str,
) -> Vec<T> {
    let out = client_cmd()
        .args(client_args(lib, case, size, count, port))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .unwrap_or_else(|| {
            panic!(
                "{lib:?} {case} {size}: no {prefix} line; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .split_whitespace()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{lib:?} {case}: {v} is not a number"))
        })
        .collect()
}

fn client(lib: Lib, case: &str, size: usize, count: u64, port: u16) -> Vec<f64> {
    run_client(lib, case, size, count, port, "RESULT")
}

/// Round trips per client per repetition, and the interleaved slices they are made in.
const RTT_PER_REP: u64 = 20_000;
const RTT_SLICES: usize = 10;

/// One client's round-trip samples (nanoseconds) from a run of `count` round trips.
fn rtt_samples(lib: Lib, count: u64, port: u16) -> Vec<u64> {
    let v: Vec<u64> = run_client(lib, "rtt", 32, count, port, "SAMPLES");
    assert_eq!(
        v.len() as u64,
        count,
        "{lib:?} made {} of {count} round trips",
        v.len()
    );
    v
}

/// Callgrind runs per instruction row; the row reports their median.
const CALLGRIND_REPS: usize = 3;

/// Instructions the client executes for `count` messages, from callgrind.
fn instructions(lib: Lib, case: &str, size: usize, count: u64, port: u16) -> Option<f64> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe())
        .args(client_args(lib, case, size, count, port))
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Report {
    /// (row, lib) → value; rows in insertion order.
    rows: Vec<(String, bool)>,
    values: BTreeMap<(String, String), f64>,
}

impl Report {
    fn put(&mut self, row: &str, higher_is_better: bool, lib: Lib, v: f64) {
        if !self.rows.iter().any(|(r, _)| r == row) {
            self.rows.push((row.to_owned(), higher_is_better));
        }
        self.values
            .insert((row.to_owned(), lib.name().to_owned()), v);
    }
}

fn fmt(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn run(reps: usize, smoke: bool, no_callgrind: bool, out: &str) {
    let started = Instant::now();
    let mut rep = Report {
        rows: Vec::new(),
        values: BTreeMap::new(),
    };
    let mut deflate_row: Option<String> = None;
    let sizes: [(usize, u64, &str); 4] = if smoke {
        [
            (16, 2000, "16 B"),
            (1024, 500, "1 KiB"),
            (65536, 20, "64 KiB"),
            (1 << 20, 3, "1 MiB"),
        ]
    } else {
        [
            (16, 2_000_000, "16 B"),
            (1024, 400_000, "1 KiB"),
            (65536, 16_000, "64 KiB"),
            (1 << 20, 1000, "1 MiB"),
        ]
    };
    for (case, kind) in [("recv", Kind::Blast), ("send", Kind::Sink)] {
        for &(size, count, label) in &sizes {
            let srv = server(kind, size, count);
            let mut secs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            let mut peaks: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for r in 0..reps {
                let mut order: Vec<Lib> = Lib::ALL.to_vec();
                if r % 2 == 1 {
                    order.reverse();
                }
                for lib in order {
                    let v = client(lib, case, size, count, srv.1);
                    secs.entry(lib.name()).or_default().push(v[0]);
                    peaks.entry(lib.name()).or_default().push(v[2]);
                }
            }
            for lib in Lib::ALL {
                let s = median(secs.get_mut(lib.name()).unwrap());
                let msgs = count as f64 / s;
                rep.put(&format!("{case} {label}: msg/s"), true, lib, msgs);
                rep.put(
                    &format!("{case} {label}: MiB/s"),
                    true,
                    lib,
                    msgs * size as f64 / 1048576.0,
                );
                if size == 1 << 20 {
                    rep.put(
                        &format!("{case} {label}: peak RSS KiB"),
                        false,
                        lib,
                        median(peaks.get_mut(lib.name()).unwrap()),
                    );
                }
            }
            eprintln!(
                "{case} {label} done ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    // Round trips: each repetition's round trips are made in slices, every client's slice
    // after the other's (order alternated), so that all of them see the same stretches of this
    // VM's drifting latency; percentiles are of the pooled samples.
    {
        let srv = server(Kind::Echo, 32, 0);
        let (slices, per_slice) = if smoke {
            (1, 200)
        } else {
            (RTT_SLICES, RTT_PER_REP / RTT_SLICES as u64)
        };
        let mut pooled: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for r in 0..reps * slices {
            let mut order: Vec<Lib> = Lib::ALL.to_vec();
            if r % 2 == 1 {
                order.reverse();
            }
            for lib in order {
                let v = rtt_samples(lib, per_slice, srv.1);
                pooled.entry(lib.name()).or_default().extend(v);
            }
        }
        for lib in Lib::ALL {
            let v = pooled.get_mut(lib.name()).unwrap();
            v.sort_unstable();
            for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
                let at = ((v.len() - 1) as f64 * q).round() as usize;
                rep.put(
                    &format!("round trip 32 B {label}: µs"),
                    false,
                    lib,
                    v[at] as f64 / 1000.0,
                );
            }
        }
        eprintln!("rtt done ({:.0}s)", started.elapsed().as_secs_f64());
    }
    // Idle connections.
    {
        let srv = server(Kind::Idle, 0, 0);
        let n = if smoke { 50 } else { 5000 };
        for case in ["idle", "parked"] {
            for lib in Lib::ALL {
                let v = client(lib, case, 0, n, srv.1);
                let label = if case == "idle" {
                    "idle connection: bytes each"
                } else {
                    "idle, task parked in receive: bytes each"
                };
                rep.put(label, false, lib, v[0]);
            }
        }
        eprintln!("idle done ({:.0}s)", started.elapsed().as_secs_f64());
    }
    // Compressed echo: wsc and yawc (the peer with permessage-deflate) through Node's `ws`.
    if let Some(node) = node_ws_server() {
        let (size, count) = if smoke {
            (16 * 1024, 20)
        } else {
            (16 * 1024, 2000)
        };
        let mut t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for r in 0..reps {
            let order = if r % 2 == 0 {
                ["wsc", "yawc"]
            } else {
                ["yawc", "wsc"]
            };
            for lib in order {
                // The deflate cases run in the wsc client binary, whichever library they use.
                let case = format!("deflate-{lib}");
                let v = client(Lib::Wsc, &case, size, count, node.1);
                t.entry(lib).or_default().push(v[0]);
            }
        }
        let mibs = |v: &mut Vec<f64>| count as f64 * size as f64 / median(v) / 1048576.0;
        let (w, y) = (
            mibs(t.get_mut("wsc").unwrap()),
            mibs(t.get_mut("yawc").unwrap()),
        );
        deflate_row = Some(format!(
            "| compressed echo, 16 KiB JSON-like text, through Node `ws` (permessage-deflate): MiB/s of payload each way | wsc {w:.1} | yawc {y:.1} | wsc ÷ yawc {:.2} |",
            w / y
        ));
        eprintln!("deflate done ({:.0}s)", started.elapsed().as_secs_f64());
    } else {
        eprintln!(
            "compressed echo skipped: node or target/node/node_modules/ws missing (scripts/bench installs them)"
        );
    }
    // Instructions per message.
    if !no_callgrind {
        for (case, kind, size, n1, label) in [
            ("recv", Kind::Blast, 16usize, 20_000u64, "16 B"),
            ("recv", Kind::Blast, 65536, 2000, "64 KiB"),
            ("send", Kind::Sink, 16, 20_000, "16 B"),
            ("send", Kind::Sink, 65536, 2000, "64 KiB"),
        ] {
            let n2 = n1 * 3;
            let s1 = server(kind, size, n1);
            let s2 = server(kind, size, n2);
            for lib in Lib::ALL {
                // How a receive's reads split the stream depends on timing even under
                // callgrind (how much the socket holds when the client reads), so each row is
                // the median of three differences.
                let mut per_msg: Vec<f64> = (0..CALLGRIND_REPS)
                    .filter_map(|_| {
                        let a = instructions(lib, case, size, n1, s1.1)?;
                        let b = instructions(lib, case, size, n2, s2.1)?;
                        Some((b - a) / (n2 - n1) as f64)
                    })
                    .collect();
                if !per_msg.is_empty() {
                    rep.put(
                        &format!("{case} {label}: instructions/msg"),
                        false,
                        lib,
                        median(&mut per_msg),
                    );
                }
            }
        }
        eprintln!("callgrind done ({:.0}s)", started.elapsed().as_secs_f64());
    }
    let contended_rows = contended(reps, smoke);
    eprintln!("contended done ({:.0}s)", started.elapsed().as_secs_f64());
    let mut table = render(&rep);
    table.push_str(&contended_rows);
    table.push_str(&mask_table(if smoke { 1 } else { 5 * reps }));
    eprintln!("mask done ({:.0}s)", started.elapsed().as_secs_f64());
    if let Some(row) = deflate_row {
        table.push_str(&format!(
            "\n| compressed case | | | |\n|---|---:|---:|---:|\n{row}\n"
        ));
    }
    println!("{table}");
    if !smoke {
        let machine = machine();
        let date = Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let doc = format!(
            "# wsc benchmark results\n\nRun {date} on {machine}, `scripts/bench` ({reps} repetitions, medians; clients one after another, order alternated; servers are raw tokio TCP in another process, pinned to another core). Took {:.0} s.\n\n{table}\n{}",
            started.elapsed().as_secs_f64(),
            kept_notes(out)
        );
        std::fs::write(out, doc).unwrap();
        eprintln!("wrote {out}");
    }
}

/// The mask row: each masking kernel this CPU has (`wsc_proto::MaskKernel`), masking one
/// 64 KiB payload in cache over and over, in GB/s: the best of `reps` runs of each, the
/// kernels taking turns so that a noisy spell does not fall on one of them only.
fn mask_table(reps: usize) -> String {
    use wsc_proto::MaskKernel as Kernel;
    const LEN: usize = 64 * 1024;
    const ROUNDS: usize = 1000;
    let mut buf = vec![0x5au8; LEN];
    let kernels = Kernel::available();
    let mut best = vec![f64::MAX; kernels.len()];
    for _ in 0..reps.max(1) {
        for (k, best) in kernels.iter().zip(&mut best) {
            let t = Instant::now();
            for i in 0..ROUNDS {
                k.apply(std::hint::black_box(&mut buf), [1, 2, 3, i as u8], 0);
            }
            *best = best.min(t.elapsed().as_secs_f64());
        }
    }
    let cells: Vec<String> = kernels
        .iter()
        .zip(&best)
        .map(|(k, t)| format!("{} {:.1}", k.name(), (ROUNDS * LEN) as f64 / t / 1e9))
        .collect();
    format!(
        "\n| masking case | GB/s per kernel |\n|---|---|\n| mask 64 KiB in cache (`MaskKernel`; the fastest is used) | {} |\n",
        cells.join(" · ")
    )
}

/// The outgoing queue's lock under contention: this build (the parking_lot lock) and, when
/// `WSC_BENCH_STD_MUTEX` names a build with `--cfg wsc_std_mutex` (scripts/bench makes one),
/// the same case with a std `Mutex`, runs interleaved.
fn contended(reps: usize, smoke: bool) -> String {
    let (small, large) = if smoke {
        (200u64, 2usize)
    } else {
        (100_000, 200)
    };
    let other = std::env::var_os("WSC_BENCH_STD_MUTEX").filter(|_| !smoke);
    let srv = server(Kind::Drain, 0, 0);
    let mut runs: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for _ in 0..reps {
        let mut variants = vec![("parking_lot", client_cmd())];
        if let Some(path) = &other {
            let mut c = client_cmd();
            // The same pinning, another binary.
            let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
            c = if c.get_program() == "taskset" {
                let mut t = Command::new("taskset");
                t.args(&args[..2]).arg(path);
                t
            } else {
                Command::new(path)
            };
            variants.push(("std Mutex", c));
        }
        for (name, mut cmd) in variants {
            let out = cmd
                .args(client_args(Lib::Wsc, "contended", large, small, srv.1))
                .output()
                .unwrap();
            let line = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
                .unwrap_or_else(|| {
                    panic!("contended {name}: {}", String::from_utf8_lossy(&out.stderr))
                });
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let e = runs.entry(name).or_default();
            e.0.push((8 * small + large as u64) as f64 / v[0]);
            e.1.push(v[1]);
        }
    }
    let mut s = format!(
        "\n| contended send: 8 tasks × {small} messages of 16 B and one task × {large} of 1 MiB, one session, 2 runtime workers | messages/s | slowest 16 B send (µs) |\n|---|---:|---:|\n"
    );
    for (name, (rate, worst)) in runs.iter_mut() {
        s.push_str(&format!(
            "| {name} | {:.0} | {:.0} |\n",
            median(rate),
            median(worst)
        ));
    }
    s
}

/// Marks where `bench/RESULTS.md`'s hand-written notes begin: a run rewrites the tables above
/// it and keeps everything from it on.
const NOTES_MARK: &str = "<!-- Notes: written by hand, kept by scripts/bench. -->";

/// The hand-written notes of the report at `out`, from [`NOTES_MARK`] on (empty if none).
fn kept_notes(out: &str) -> String {
    std::fs::read_to_string(out)
        .ok()
        .and_then(|old| old.find(NOTES_MARK).map(|i| old[i..].to_owned()))
        .unwrap_or_else(|| format!("{NOTES_MARK}\n"))
}

/// Node's `ws` echo server with permessage-deflate (the tests' peer), if node and the package are here.
fn node_ws_server() -> Option<Server> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = root.join("target/node/node_modules");
    if !modules.join("ws").exists() {
        return None;
    }
    let mut child = Command::new("node")
        .env("NODE_PATH", &modules)
        .arg(root.join("crates/wsc/tests/peers/ws_node_server.js"))
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let port = line.trim().strip_prefix("READY ")?.parse().ok()?;
    Some(Server(child, port))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn render(rep: &Report) -> String {
    let libs: Vec<&str> = Lib::ALL.iter().map(|l| l.name()).collect();
    let peers: Vec<&str> = Lib::ALL
        .iter()
        .filter(|l| l.is_peer())
        .map(|l| l.name())
        .collect();
    let mut s = String::from("| row | ");
    s.push_str(&libs.join(" | "));
    s.push_str(" | wsc ÷ best peer | wsc raw ÷ best peer | wsc raw ÷ tcp |\n|---|");
    s.push_str(&"---:|".repeat(libs.len() + 3));
    s.push('\n');
    for (row, higher) in &rep.rows {
        let get = |lib: &str| rep.values.get(&(row.clone(), lib.to_owned())).copied();
        s.push_str(&format!("| {row} |"));
        for l in &libs {
            s.push_str(&format!(" {} |", get(l).map(fmt).unwrap_or("-".into())));
        }
        let best = peers
            .iter()
            .filter_map(|p| get(p))
            .fold(None::<f64>, |b, v| {
                Some(match b {
                    None => v,
                    Some(b) if *higher => b.max(v),
                    Some(b) => b.min(v),
                })
            });
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        s.push_str(&format!(
            " {} | {} | {} |\n",
            ratio(get("wsc"), best),
            ratio(get("wsc raw"), best),
            ratio(get("wsc raw"), get("tcp (ceiling)"))
        ));
    }
    s.push_str("\nRatios are value ÷ value: above 1 is more for throughput rows and more (worse) for latency, instruction, memory rows.\n");
    s
}
