//! Talking to a server: pipe mode (stdin lines out, messages in as lines) and interactive
//! mode (line editing, history, incoming messages printed above the prompt).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use wsc::{CloseCode, CloseReason, Frame, Message, OpCode, Sender};

use crate::opts::{ConnectOpts, parse_duration};
use crate::{Failure, failure};

#[derive(Args, Debug, Clone, Default)]
pub struct TalkOpts {
    /// Send each stdin line as a binary message (without its newline).
    #[arg(long)]
    pub binary: bool,
    /// Pretty-print messages that are JSON.
    #[arg(long)]
    pub json: bool,
    /// Show every frame, control and continuation frames included (a raw session; wsc still
    /// answers pings and the server's Close).
    #[arg(long)]
    pub raw: bool,
    /// After stdin ends, wait this long for replies, then close (default 5s; stops early once
    /// as many messages came back as were sent, or --count were received).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// When stdin ends, close at once without waiting for replies (as --wait 0)
    /// (e.g. printf 'fire\nforget\n' | wsc --exit-on-eof ws://host/).
    #[arg(long = "exit-on-eof", conflicts_with_all = ["no_close", "wait"])]
    pub exit_on_eof: bool,
    /// When stdin ends, keep the session open and print what arrives until the server closes
    /// it (or --count messages arrived) (e.g. echo subscribe | wsc --no-close ws://host/feed).
    #[arg(long = "no-close", conflicts_with = "wait")]
    pub no_close: bool,
    /// Close and exit once N messages were received; after stdin ends, wait for them (for
    /// --wait when given, else until they arrive or the server closes)
    /// (e.g. echo subscribe | wsc --count 3 ws://host/feed).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Send all of stdin as one message (without its final newline), print the first reply
    /// and exit; no reply within --wait (default 5s) is exit code 5
    /// (e.g. echo '{"op":"ping"}' | wsc -1 ws://host/).
    #[arg(short = '1', long = "one-message", conflicts_with_all = ["count", "no_close", "exit_on_eof"])]
    pub one_message: bool,
    /// Prefix each line printed for a received message with when it arrived: RFC 3339, UTC,
    /// milliseconds (e.g. `2026-01-31T12:00:00.123Z hello`).
    #[arg(long)]
    pub timestamps: bool,
    /// Print binary messages as base64, and send each stdin line, read as base64, as a binary
    /// message (e.g. echo 3q2+7w== | wsc --base64 ws://host/).
    #[arg(long, conflicts_with_all = ["binary", "json"])]
    pub base64: bool,
    /// Reconnect when the connection drops or a connect fails, with a growing delay; lines
    /// typed meanwhile are queued (stdin is read as lines, as in pipe mode)
    /// (e.g. wsc --reconnect --no-close ws://host/feed).
    #[arg(long, conflicts_with_all = ["raw", "exec", "one_message"])]
    pub reconnect: bool,
    /// The longest delay between two reconnection attempts (default 30s).
    #[arg(long = "reconnect-max-delay", requires = "reconnect", value_parser = parse_duration, value_name = "DURATION")]
    pub reconnect_max_delay: Option<Duration>,
    /// Run this command (with sh -c) on the session instead of reading stdin: each message
    /// received is a line on its stdin, each line it prints is sent; its stderr is wsc's. When
    /// it exits, wsc closes with 1000 (status 0; exit code 0) or 1011 (exit code 9); when the
    /// server closes first, its stdin is closed and it has 2 s to exit before it is killed
    /// (e.g. --exec 'jq -c --unbuffered .'; a program that buffers its output needs
    /// `stdbuf -oL`).
    #[arg(long, value_name = "COMMAND", conflicts_with_all = [
        "raw", "json", "binary", "base64", "timestamps", "one_message", "count", "wait",
        "exit_on_eof", "no_close",
    ])]
    pub exec: Option<String>,
}

/// How long pipe mode waits for replies after stdin ends when neither --wait, --count nor
/// --no-close says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

impl TalkOpts {
    /// How long to wait for replies once stdin ended; `None`: until the session ends.
    fn after_eof(&self) -> Option<Duration> {
        if self.exit_on_eof {
            Some(Duration::ZERO)
        } else if let Some(w) = self.wait {
            Some(w)
        } else if self.no_close || self.count.is_some() {
            None
        } else {
            Some(DEFAULT_WAIT)
        }
    }

    /// The number of received messages that ends the session (`--count`, `-1`).
    fn limit(&self) -> Option<u64> {
        if self.one_message {
            Some(1)
        } else {
            self.count
        }
    }

    /// How many received messages end the wait after `sent` were sent.
    fn enough(&self, sent: u64) -> u64 {
        match self.limit() {
            Some(n) => n,
            None if self.no_close => u64::MAX,
            None => sent,
        }
    }
}

/// Counts the messages received and wakes whoever waits for them.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    arrived: tokio::sync::Notify,
}

impl Received {
    /// Counts one; returns the new count.
    fn one(&self) -> u64 {
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        self.arrived.notify_one();
        n
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until `enough` messages arrived, the session ended or `limit` passed.
    async fn wait_for(&self, enough: u64, limit: Option<Duration>, closed: impl Future) {
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(closed, until);
        while self.get() < enough {
            tokio::select! {
                () = self.arrived.notified() => {}
                _ = &mut closed => return,
                () = &mut until => return,
            }
        }
    }
}

/// What a talk session prints, and where: received messages on stdout (through the line
/// editor's printer in interactive mode); with `-v` or `--raw`, every control frame wsc sends
/// (keepalive pings, pongs, its Close) as `> …` and, with `-v`, every control frame received
/// as `< …`, on stderr in pipe mode so that stdout stays the received data.
struct Out {
    print: std::sync::Mutex<Box<dyn FnMut(String) + Send>>,
    interactive: bool,
    verbose: bool,
    raw: bool,
}

impl Out {
    fn line(&self, line: String) {
        (self.print.lock().unwrap_or_else(|p| p.into_inner()))(line);
    }

    /// A frame wsc is about to send.
    fn sent(&self, f: &Frame) {
        if self.verbose || self.raw {
            self.log('>', f);
        }
    }

    /// A control frame received (a raw session's are also printed whole by `--raw`).
    fn received_control(&self, f: &Frame) {
        if self.interactive && f.opcode == OpCode::Pong && !self.raw {
            // The answer to `/ping`, always shown on a terminal.
            self.line(format!(
                "{} < pong: {}",
                timestamp(),
                payload_text(&f.payload)
            ));
        } else if self.verbose && !self.raw {
            self.log('<', f);
        }
    }

    fn log(&self, dir: char, f: &Frame) {
        let text = describe_frame(f);
        if self.interactive {
            self.line(format!("{} {dir} {text}", timestamp()));
        } else {
            eprintln!("{dir} {text}");
        }
    }
}

/// Sends `frame`, showing it first (see [`Out`]).
async fn send_frame(tx: &Sender, out: &Out, frame: Frame) -> Result<(), wsc::Error> {
    out.sent(&frame);
    tx.send_frame(frame).await
}

/// How the session ended, as the parts of a talk session saw it.
#[derive(Default)]
struct Ending {
    /// wsc started the closing handshake (the user's `/close`, or the end of input): the
    /// server's answer is an echo, not the server's own code.
    we_closed: std::sync::atomic::AtomicBool,
    /// A failure found by the reader or the keepalive, which decides the exit code.
    failure: std::sync::Mutex<Option<Failure>>,
    /// Why the connection dropped, when it did (an I/O error after the handshake).
    dropped: std::sync::Mutex<Option<String>>,
}

impl Ending {
    fn fail(&self, f: Failure) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(f);
    }
}

/// Closes with `reason`, showing the Close; remembers that wsc closed first.
async fn close(tx: &Sender, out: &Out, ending: &Ending, reason: CloseReason) {
    if !tx.is_open() {
        return;
    }
    ending.we_closed.store(true, Ordering::Release);
    out.sent(&Frame::close(Some(&reason)));
    // The server never answered: exit 5, as the close timeout is a timeout like the others.
    if let Err(e @ wsc::Error::Timeout(_)) = tx.close(reason).await {
        ending.fail(failure(&e));
    }
}

/// The received side of a session: every frame (a raw session, wsc doing the protocol's
/// automation itself, visibly) or whole messages (a default session: `--compress`, whose
/// extension only a default session can run).
enum Incoming {
    Frames(wsc::RawReceiver),
    Messages(wsc::Receiver),
}

pub async fn run(
    url: Option<String>,
    connect: &ConnectOpts,
    opts: &TalkOpts,
) -> Result<(), Failure> {
    if connect.compress && opts.raw {
        return Err(Failure::new(
            2,
            "--raw cannot be combined with --compress: a raw session shows frames as they are on the wire and negotiates no extension",
        ));
    }
    let url = match url {
        Some(u) => u,
        None => {
            let addr = crate::serve::spawn_echo("127.0.0.1:0").await?;
            let url = format!("ws://{addr}/");
            eprintln!("wsc: no URL given; talking to a built-in echo server at {url}");
            url
        }
    };
    if opts.reconnect {
        return reconnecting(&url, connect, opts).await;
    }
    let client = connect.client()?;
    let request = connect.request(&client, &url)?;
    if let Some(command) = &opts.exec {
        let session = request
            .connect()
            .await
            .map_err(|e| talk_failure(&e, connect))?;
        if connect.verbose {
            print_handshake(session.call());
        }
        let (tx, rx) = session.split();
        return exec_ended(crate::bridge::exec(tx, rx, command).await);
    }
    let (tx, incoming) = if connect.compress {
        let session = request
            .connect()
            .await
            .map_err(|e| talk_failure(&e, connect))?;
        if connect.verbose {
            print_handshake(session.call());
        }
        let (tx, rx) = session.split();
        (tx, Incoming::Messages(rx))
    } else {
        let session = request
            .connect_raw()
            .await
            .map_err(|e| talk_failure(&e, connect))?;
        if connect.verbose {
            print_handshake(session.call());
        }
        let (tx, rx) = session.split();
        (tx, Incoming::Frames(rx))
    };
    // `-1` reads all of stdin as one message, a terminal's too (until Ctrl-D).
    let interactive =
        !opts.one_message && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let received = Arc::new(Received::default());
    let printer: Box<dyn FnMut(String) + Send> = if interactive {
        interactive_printer()?
    } else {
        pipe_printer(opts.timestamps)
    };
    let out = Arc::new(Out {
        print: std::sync::Mutex::new(printer),
        interactive,
        verbose: connect.verbose,
        raw: opts.raw,
    });
    let ending = Arc::new(Ending::default());
    let (pong_tx, pong_rx) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn({
        let (tx, out, ending) = (tx.clone(), out.clone(), ending.clone());
        let read = read_loop(
            incoming,
            tx.clone(),
            out.clone(),
            opts.clone(),
            connect.clone(),
            received.clone(),
            ending.clone(),
            pong_tx,
        );
        async move {
            read.await;
            // The prompt waits for a line; say why the session is over.
            if out.interactive && !ending.we_closed.load(Ordering::Acquire) {
                let reason = tx.close_reason().await;
                out.line(format!(
                    "{} session closed ({reason}); press Enter to exit",
                    timestamp()
                ));
            }
        }
    });
    // A raw session never pings by itself: wsc keeps the connection alive (a default
    // session's library does, with the same settings).
    let keepalive = match (connect.compress, connect.keepalive()) {
        (false, Some((every, timeout))) => Some(tokio::spawn(keepalive(
            tx.clone(),
            out.clone(),
            ending.clone(),
            every,
            timeout,
            pong_rx,
        ))),
        _ => None,
    };
    let sent = if interactive {
        interactive_input(&tx, &out, &ending).await?
    } else {
        // Input stops mattering once the session is over (a ping timeout, the server's Close).
        tokio::select! {
            r = pipe_input(&tx, opts) => r?,
            _ = tx.close_reason() => 0,
        }
    };

    // Input is over: wait for replies (bounded), then close.
    if tx.is_open() {
        let limit = if opts.one_message {
            Some(opts.wait.unwrap_or(DEFAULT_WAIT))
        } else {
            opts.after_eof()
        };
        received
            .wait_for(opts.enough(sent), limit, tx.close_reason())
            .await;
        close(&tx, &out, &ending, CloseReason::normal()).await;
    }
    if opts.one_message
        && received.get() == 0
        && ending
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    {
        let waited = opts.wait.unwrap_or(DEFAULT_WAIT);
        ending.fail(Failure::new(5, format!("no reply within {waited:?}")));
    }
    let reason = tx.close_reason().await;
    let _ = reader.await;
    if let Some(k) = keepalive {
        k.abort();
    }
    if let Some(f) = ending
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(f);
    }
    match reason.code() {
        CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS => Ok(()),
        CloseCode::CLOSED_ABNORMALLY => {
            let why = ending
                .dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            Err(Failure::new(
                7,
                // The library's one wording for a drop, with the I/O error behind it if any.
                match why {
                    Some(why) if why.contains(DROPPED) => why,
                    Some(why) => format!("{DROPPED} ({why})"),
                    None => DROPPED.to_owned(),
                },
            ))
        }
        // The closing handshake wsc started completed: the code is the user's own, echoed.
        _ if ending.we_closed.load(Ordering::Acquire) => Ok(()),
        _ => Err(Failure::new(8, format!("server closed with {reason}"))),
    }
}

/// `--reconnect`: pipe mode over the library's reconnecting session. Lines read while
/// disconnected are queued and sent once connected again.
async fn reconnecting(url: &str, connect: &ConnectOpts, opts: &TalkOpts) -> Result<(), Failure> {
    let client = connect.client()?;
    let mut config = wsc::ReconnectConfig::default();
    if let Some(d) = opts.reconnect_max_delay {
        config = config.max_delay(d);
    }
    let mut rc = client
        .reconnecting(connect.target(url)?, config)
        .map_err(|e| failure(&e))?;
    let mut print = pipe_printer(opts.timestamps);
    let mut show = |m: &Message| print(describe_message(m, opts, false));
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    let (mut sent, mut received) = (0u64, 0u64);
    let reached = |n: u64| opts.limit().is_some_and(|limit| n >= limit);
    // Input and output together, until stdin ends (or enough arrived, or the session ended).
    let mut input_done = false;
    while !input_done && !reached(received) {
        tokio::select! {
            line = lines.next_segment() => match line {
                Ok(Some(line)) => {
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    rc.send(outgoing(line, opts)?).await.map_err(|e| failure(&e))?;
                    sent += 1;
                }
                Ok(None) => input_done = true,
                Err(e) => return Err(Failure::new(1, format!("reading stdin: {e}"))),
            },
            m = rc.recv() => match m {
                Some(Ok(m)) => {
                    received += 1;
                    show(&m);
                }
                Some(Err(e)) if connect.verbose => eprintln!("wsc: {}", e.chain()),
                Some(Err(_)) => {}
                None => return Ok(()),
            },
        }
    }
    // Stdin ended: wait for replies as pipe mode does.
    let enough = opts.enough(sent);
    let deadline = opts.after_eof().map(|d| tokio::time::Instant::now() + d);
    while received < enough {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rc.recv()).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => rc.recv().await,
        };
        match next {
            Some(Ok(m)) => {
                received += 1;
                show(&m);
            }
            Some(Err(e)) if connect.verbose => eprintln!("wsc: {}", e.chain()),
            Some(Err(_)) => {}
            None => return Ok(()),
        }
    }
    match rc.close(CloseReason::normal()).await {
        Ok(_) => Ok(()),
        // Closing while disconnected has no one to answer: nothing was left to say.
        Err(wsc::Error::Closed(_)) => Ok(()),
        Err(e) => Err(failure(&e)),
    }
}

/// The exit of `wsc --exec`: the program's failure (exit code 9) first, then how the session
/// ended, as in talk mode.
fn exec_ended(o: crate::bridge::Outcome) -> Result<(), Failure> {
    if let Some(p) = o.problem {
        return Err(Failure::new(1, p));
    }
    if let Some(s) = o.status.filter(|s| !s.success()) {
        return Err(Failure::new(9, format!("the program failed ({s})")));
    }
    match o.reason.code().as_u16() {
        1000 | 1001 | 1005 => Ok(()),
        1006 => Err(Failure::new(7, "connection closed without a Close frame")),
        _ => Err(Failure::new(8, format!("server closed with {}", o.reason))),
    }
}

/// How a connection that ended without a Close frame (1006) is reported: the library's words.
const DROPPED: &str = "connection closed without a Close frame";

/// [`failure`], naming the CLI's flag where the library names its setting.
fn talk_failure(e: &wsc::Error, connect: &ConnectOpts) -> Failure {
    match (e, connect.max_message_size) {
        (wsc::Error::MessageTooBig { size, max, .. }, Some(_)) => too_big(*size, *max),
        _ => failure(e),
    }
}

fn too_big(size: u64, max: usize) -> Failure {
    Failure::new(
        6,
        format!("message too big: {size} bytes, over --max-message-size ({max})"),
    )
}

fn print_handshake(call: &wsc::Call) {
    let u = call.url();
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    eprintln!("> GET {target} HTTP/1.1");
    for (n, v) in call.request_headers() {
        eprintln!("> {}: {}", n, v.to_str().unwrap_or("<binary>"));
    }
    eprintln!("< HTTP/1.1 {}", call.status());
    for (n, v) in call.response_headers() {
        eprintln!("< {}: {}", n, v.to_str().unwrap_or("<binary>"));
    }
    eprintln!();
}

/// Prints each line on stdout at once, prefixed with an RFC 3339 time stamp with
/// `--timestamps`.
fn pipe_printer(timestamps: bool) -> Box<dyn FnMut(String) + Send> {
    Box::new(move |line: String| {
        let mut out = std::io::stdout().lock();
        if timestamps {
            let _ = write!(out, "{} ", rfc3339(SystemTime::now()));
        }
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    })
}

/// A stdin line (or, with `-1`, all of stdin) as the message to send: text, binary with
/// `--binary`, or binary decoded from base64 with `--base64`.
fn outgoing(data: &[u8], opts: &TalkOpts) -> Result<Message, Failure> {
    if opts.base64 {
        let clean: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        return base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map(Message::binary)
            .map_err(|e| Failure::new(2, format!("stdin is not base64: {e}")));
    }
    if opts.binary {
        return Ok(Message::binary(data.to_vec()));
    }
    std::str::from_utf8(data)
        .map(Message::text)
        .map_err(|_| Failure::new(2, "stdin is not UTF-8 text; use --binary or --base64"))
}

/// `-1`: all of stdin (up to `limit` bytes) as one message, without its final newline.
async fn read_all_stdin(limit: usize) -> Result<Vec<u8>, Failure> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    tokio::io::stdin()
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut all)
        .await
        .map_err(|e| Failure::new(1, format!("reading stdin: {e}")))?;
    if all.len() > limit {
        return Err(Failure::new(
            2,
            format!("stdin is over the largest message ({limit} bytes)"),
        ));
    }
    if all.last() == Some(&b'\n') {
        all.pop();
        if all.last() == Some(&b'\r') {
            all.pop();
        }
    }
    Ok(all)
}

async fn pipe_input(tx: &Sender, opts: &TalkOpts) -> Result<u64, Failure> {
    if opts.one_message {
        let m = outgoing(&read_all_stdin(tx.max_message_size()).await?, opts)?;
        return match tx.send(m).await {
            Ok(()) => Ok(1),
            Err(_) if !tx.is_open() => Ok(0),
            Err(e) => Err(failure(&e)),
        };
    }
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    let mut sent = 0;
    loop {
        let line = match lines.next_segment().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Err(Failure::new(1, format!("reading stdin: {e}"))),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        match tx.send(outgoing(line, opts)?).await {
            Ok(()) => sent += 1,
            Err(_) if !tx.is_open() => break,
            Err(e) => return Err(failure(&e)),
        }
    }
    Ok(sent)
}

/// The payload of wsc's keepalive ping number `n`.
fn keepalive_payload(n: u64) -> Vec<u8> {
    format!("wsc keepalive {n}").into_bytes()
}

/// Which keepalive ping a pong answers, if it answers one.
fn keepalive_number(pong: &[u8]) -> Option<u64> {
    std::str::from_utf8(pong)
        .ok()?
        .strip_prefix("wsc keepalive ")?
        .parse()
        .ok()
}

/// A raw session's keepalive: a ping every `every`; without the pong that echoes it within
/// `timeout`, closes with 1011 and fails with exit code 5, as a default session does.
async fn keepalive(
    tx: Sender,
    out: Arc<Out>,
    ending: Arc<Ending>,
    every: Duration,
    timeout: Duration,
    mut pongs: tokio::sync::watch::Receiver<u64>,
) {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(every).await;
        if !tx.is_open() {
            return;
        }
        n += 1;
        if send_frame(&tx, &out, Frame::ping(keepalive_payload(n)))
            .await
            .is_err()
        {
            return;
        }
        let answered = tokio::time::timeout(timeout, pongs.wait_for(|got| *got >= n))
            .await
            .map(|r| r.is_ok());
        match answered {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                if !tx.is_open() {
                    return;
                }
                ending.fail(Failure::new(
                    5,
                    format!("ping timed out: no pong within {timeout:?}"),
                ));
                if let Ok(r) = CloseReason::new(1011, "Ping timeout") {
                    out.sent(&Frame::close(Some(&r)));
                    let _ = tx.close(r).await;
                }
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    incoming: Incoming,
    tx: Sender,
    out: Arc<Out>,
    opts: TalkOpts,
    connect: ConnectOpts,
    received: Arc<Received>,
    ending: Arc<Ending>,
    pongs: tokio::sync::watch::Sender<u64>,
) {
    let limit = connect.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE);
    let mut rx = match incoming {
        Incoming::Frames(rx) => rx,
        Incoming::Messages(mut rx) => {
            while let Some(item) = rx.recv().await {
                match item {
                    Ok(m) => {
                        let n = received.one();
                        out.line(describe_message(&m, &opts, out.interactive));
                        if opts.limit().is_some_and(|limit| n >= limit) {
                            close(&tx, &out, &ending, CloseReason::normal()).await;
                            break;
                        }
                    }
                    Err(e) => {
                        end_with(&e, &ending, &connect);
                        break;
                    }
                }
            }
            return;
        }
    };
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    while let Some(item) = rx.recv().await {
        let frame = match item {
            Ok(f) => f,
            Err(e) => {
                end_with(&e, &ending, &connect);
                break;
            }
        };
        if opts.raw {
            let text = describe_frame(&frame);
            out.line(if out.interactive {
                format!("{} < {text}", timestamp())
            } else {
                text
            });
        }
        match frame.opcode {
            OpCode::Ping => {
                out.received_control(&frame);
                let _ = send_frame(&tx, &out, Frame::pong(frame.payload.clone())).await;
            }
            OpCode::Close => {
                out.received_control(&frame);
                if tx.is_open() {
                    let echo = frame.close_reason().ok().flatten();
                    let _ = send_frame(&tx, &out, Frame::close(echo.as_ref())).await;
                }
            }
            OpCode::Pong => {
                out.received_control(&frame);
                if let Some(n) = keepalive_number(&frame.payload) {
                    pongs.send_if_modified(|got| {
                        let newer = n > *got;
                        if newer {
                            *got = n;
                        }
                        newer
                    });
                }
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let (op, mut data) = match (frame.opcode, partial.take()) {
                    (OpCode::Continuation, Some((op, d))) => (op, d),
                    (op, _) => (op, Vec::new()),
                };
                let size = (data.len() + frame.payload.len()) as u64;
                if size > limit as u64 {
                    // What a default session does past max_message_size: 1009, and exit 6.
                    ending.fail(too_big(size, limit));
                    if let Ok(r) = CloseReason::new(1009, "message too big") {
                        close(&tx, &out, &ending, r).await;
                    }
                    break;
                }
                data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    partial = Some((op, data));
                    continue;
                }
                let n = received.one();
                if !opts.raw {
                    let m = if op == OpCode::Text {
                        Message::text(String::from_utf8_lossy(&data).into_owned())
                    } else {
                        Message::binary(data)
                    };
                    out.line(describe_message(&m, &opts, out.interactive));
                }
                if opts.limit().is_some_and(|limit| n >= limit) {
                    close(&tx, &out, &ending, CloseReason::normal()).await;
                    break;
                }
            }
        }
    }
}

/// The default largest message, as the library's default `max_message_size`.
const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Records why the receiving side ended: a dropped connection (exit 7, decided from the
/// close reason 1006), the end of the close timeout (the reason decides), or a failure.
fn end_with(e: &wsc::Error, ending: &Ending, connect: &ConnectOpts) {
    match e {
        wsc::Error::Timeout(wsc::TimeoutKind::Close) => {}
        wsc::Error::Io { .. } => {
            *ending.dropped.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.chain().to_string());
        }
        wsc::Error::Closed(Some(r)) if r.code().as_u16() == 1006 => {}
        _ => ending.fail(talk_failure(e, connect)),
    }
}

fn describe_message(m: &Message, opts: &TalkOpts, interactive: bool) -> String {
    let body = match m {
        Message::Text(t) if opts.json => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| t.to_string()),
            Err(_) => t.to_string(),
        },
        Message::Text(t) => t.to_string(),
        Message::Binary(b) if interactive => hex(b),
        Message::Binary(b) if opts.base64 => base64::engine::general_purpose::STANDARD.encode(b),
        Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    };
    if interactive {
        let kind = if m.is_text() { "text" } else { "binary" };
        format!("{} < {kind}: {body}", timestamp())
    } else {
        body
    }
}

/// One frame on one line: `kind [fin|more rsv=…] body`.
fn describe_frame(f: &Frame) -> String {
    let kind = format!("{:?}", f.opcode).to_lowercase();
    let body = match f.opcode {
        OpCode::Close => match f.close_reason() {
            Ok(Some(r)) => r.to_string(),
            _ => String::new(),
        },
        OpCode::Text => String::from_utf8_lossy(&f.payload).into_owned(),
        _ => hex(&f.payload),
    };
    let flags = format!(
        "{}{}",
        if f.fin { "fin" } else { "more" },
        if f.rsv != 0 {
            format!(" rsv={:#x}", f.rsv)
        } else {
            String::new()
        }
    );
    format!("{kind} [{flags}] {body}")
}

/// A ping or pong payload as text when it is text, else hex.
fn payload_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) => t.to_owned(),
        Err(_) => hex(b),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `HH:MM:SS.mmm` (UTC).
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        now.subsec_millis()
    )
}

/// `time` as RFC 3339 in UTC with milliseconds: `2026-01-31T12:00:00.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let t = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = t.as_secs();
    let (days, day_secs) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        (day_secs / 60) % 60,
        day_secs % 60,
        t.subsec_millis()
    )
}

fn interactive_printer() -> Result<Box<dyn FnMut(String) + Send>, Failure> {
    // The editor is created on the input thread; messages reach it through this channel and
    // are printed above the prompt with rustyline's external printer.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    PRINTER.with(|p| *p.borrow_mut() = Some(rx));
    Ok(Box::new(move |line| {
        let _ = tx.send(line);
    }))
}

thread_local! {
    static PRINTER: std::cell::RefCell<Option<std::sync::mpsc::Receiver<String>>> = const { std::cell::RefCell::new(None) };
}

enum Input {
    Send(Message),
    Frame(Frame),
    Close(CloseReason),
    Quit,
}

fn parse_command(line: &str) -> Result<Input, String> {
    if line.starts_with("//") {
        return Ok(Input::Send(Message::text(&line[1..])));
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(Input::Send(Message::text(line)));
    };
    let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    match name {
        "ping" => Ok(Input::Frame(Frame::ping(rest.as_bytes().to_vec()))),
        "binary" => {
            let clean: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
            if !clean.len().is_multiple_of(2) {
                return Err("/binary wants an even number of hex digits".into());
            }
            let bytes: Result<Vec<u8>, _> = (0..clean.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&clean[i..i + 2], 16))
                .collect();
            bytes
                .map(|b| Input::Send(Message::binary(b)))
                .map_err(|_| "/binary wants hex digits".into())
        }
        "close" => {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code: u16 = if code.is_empty() {
                CloseCode::NORMAL.as_u16()
            } else {
                code.parse()
                    .map_err(|_| format!("bad close code {code:?}"))?
            };
            if !CloseCode::from(code).is_sendable() {
                return Err(format!("{code} may not be sent in a Close frame"));
            }
            CloseReason::new(code, reason)
                .map(Input::Close)
                .map_err(|e| e.to_string())
        }
        "quit" | "exit" => Ok(Input::Quit),
        _ => Err(format!(
            "unknown command /{name}; try /ping [text], /binary <hex>, /close [code] [reason], /quit, or // to send a line starting with /"
        )),
    }
}

async fn interactive_input(tx: &Sender, out: &Out, ending: &Ending) -> Result<u64, Failure> {
    let printer_rx = PRINTER.with(|p| p.borrow_mut().take());
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<Option<String>>(16);
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok(mut rl) = rustyline::DefaultEditor::new() else {
            let _ = line_tx.blocking_send(None);
            return;
        };
        if let (Some(rx), Ok(mut printer)) = (printer_rx, rl.create_external_printer()) {
            std::thread::spawn(move || {
                use rustyline::ExternalPrinter;
                while let Ok(line) = rx.recv() {
                    let _ = printer.print(line);
                }
            });
        }
        println!(
            "connected; type a message, or /ping, /binary <hex>, /close [code] [reason], /quit"
        );
        loop {
            match rl.readline("> ") {
                Ok(line) => {
                    let _ = rl.add_history_entry(line.as_str());
                    if line_tx.blocking_send(Some(line)).is_err() {
                        break;
                    }
                    if ack_rx.recv().is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let _ = line_tx.blocking_send(None);
                    break;
                }
            }
        }
    });
    let mut sent = 0;
    while let Some(Some(line)) = line_rx.recv().await {
        let r = match parse_command(&line) {
            Ok(Input::Send(m)) => {
                sent += 1;
                tx.send(m).await
            }
            Ok(Input::Frame(f)) => send_frame(tx, out, f).await,
            Ok(Input::Close(r)) => {
                close(tx, out, ending, r).await;
                let _ = ack_tx.send(());
                break;
            }
            Ok(Input::Quit) => {
                let _ = ack_tx.send(());
                break;
            }
            Err(msg) => {
                eprintln!("{msg}");
                Ok(())
            }
        };
        let _ = ack_tx.send(());
        if let Err(e) = r {
            if !tx.is_open() {
                break;
            }
            return Err(failure(&e));
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_769_860_800, 123), "2026-01-31T12:00:00.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn commands() {
        assert!(matches!(parse_command("hi"), Ok(Input::Send(m)) if m.as_text() == Some("hi")));
        assert!(matches!(parse_command("//x"), Ok(Input::Send(m)) if m.as_text() == Some("/x")));
        assert!(
            matches!(parse_command("/binary de ad"), Ok(Input::Send(m)) if m.as_bytes() == [0xde, 0xad])
        );
        assert!(parse_command("/binary xyz").is_err());
        assert!(
            matches!(parse_command("/close 4000 bye"), Ok(Input::Close(r)) if r.code().as_u16() == 4000 && r.reason() == "bye")
        );
        assert!(parse_command("/close 1006").is_err());
        assert!(
            matches!(parse_command("/ping x"), Ok(Input::Frame(f)) if f.opcode == OpCode::Ping)
        );
        assert!(parse_command("/nope").is_err());
    }
}
