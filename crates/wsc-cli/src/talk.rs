//! Talking to a server: pipe mode (stdin lines out, messages in as lines) and interactive
//! mode (line editing, history, incoming messages printed above the prompt).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use wsc::{CloseCode, CloseReason, Frame, Message, OpCode, RawSession, Sender};

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
    /// After stdin ends, wait this long for replies (stops early once as many messages came
    /// back as were sent).
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub wait: Duration,
}

pub async fn run(
    url: Option<String>,
    connect: &ConnectOpts,
    opts: &TalkOpts,
) -> Result<(), Failure> {
    let url = match url {
        Some(u) => u,
        None => {
            let addr = crate::serve::spawn_echo("127.0.0.1:0").await?;
            let url = format!("ws://{addr}/");
            eprintln!("wsc: no URL given; talking to a built-in echo server at {url}");
            url
        }
    };
    let client = connect.client()?;
    let session = connect
        .request(&client, &url)?
        .connect_raw()
        .await
        .map_err(|e| failure(&e))?;
    if connect.verbose {
        print_handshake(&session);
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (tx, rx) = session.split();
    let received = Arc::new(AtomicU64::new(0));
    let printer: Box<dyn FnMut(String) + Send> = if interactive {
        interactive_printer()?
    } else {
        Box::new(|line: String| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        })
    };
    let reader = tokio::spawn(read_loop(
        rx,
        tx.clone(),
        printer,
        opts.clone(),
        interactive,
        received.clone(),
    ));
    let sent = if interactive {
        interactive_input(&tx).await?
    } else {
        pipe_input(&tx, opts).await?
    };

    // Input is over: wait for replies (bounded), then close.
    if tx.is_open() {
        let deadline = tokio::time::Instant::now() + opts.wait;
        while received.load(Ordering::Acquire) < sent
            && tokio::time::Instant::now() < deadline
            && tx.is_open()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if tx.is_open() {
            let _ = tx.close(CloseReason::normal()).await;
        }
    }
    let reason = tx.close_reason().await;
    let end = reader.await.unwrap_or(Ok(()));
    end?;
    match reason.code() {
        CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS => Ok(()),
        // The reason's text says what happened (the library's one wording for it).
        CloseCode::CLOSED_ABNORMALLY => Err(Failure::new(
            7,
            format!("{} ({})", reason.reason(), reason.code()),
        )),
        _ => Err(Failure::new(8, format!("server closed with {reason}"))),
    }
}

fn print_handshake(s: &RawSession) {
    let call = s.call();
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

async fn pipe_input(tx: &Sender, opts: &TalkOpts) -> Result<u64, Failure> {
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    let mut sent = 0;
    loop {
        let line = match lines.next_segment().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Err(Failure::new(1, format!("reading stdin: {e}"))),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let r = if opts.binary {
            tx.send_binary(line).await
        } else {
            match std::str::from_utf8(line) {
                Ok(t) => tx.send_text(t).await,
                Err(_) => return Err(Failure::new(2, "stdin is not UTF-8 text; use --binary")),
            }
        };
        match r {
            Ok(()) => sent += 1,
            Err(wsc::Error::Closed(_)) => break,
            Err(e) => return Err(failure(&e)),
        }
    }
    Ok(sent)
}

async fn read_loop(
    mut rx: wsc::RawReceiver,
    tx: Sender,
    mut print: Box<dyn FnMut(String) + Send>,
    opts: TalkOpts,
    interactive: bool,
    received: Arc<AtomicU64>,
) -> Result<(), Failure> {
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    while let Some(item) = rx.recv().await {
        let frame = match item {
            Ok(f) => f,
            Err(wsc::Error::Timeout(wsc::TimeoutKind::Close)) => break,
            Err(e) => return Err(failure(&e)),
        };
        if opts.raw {
            print(describe_frame(&frame, interactive));
        }
        match frame.opcode {
            OpCode::Ping => {
                let _ = tx.send_frame(Frame::pong(frame.payload.clone())).await;
            }
            OpCode::Close => {
                if tx.is_open() {
                    let echo = frame.close_reason().ok().flatten();
                    let _ = tx.send_frame(Frame::close(echo.as_ref())).await;
                }
            }
            OpCode::Pong => {}
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let (op, mut data) = match (frame.opcode, partial.take()) {
                    (OpCode::Continuation, Some((op, d))) => (op, d),
                    (op, _) => (op, Vec::new()),
                };
                data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    partial = Some((op, data));
                    continue;
                }
                received.fetch_add(1, Ordering::AcqRel);
                if !opts.raw {
                    let m = if op == OpCode::Text {
                        Message::text(String::from_utf8_lossy(&data).into_owned())
                    } else {
                        Message::binary(data)
                    };
                    print(describe_message(&m, &opts, interactive));
                }
            }
        }
    }
    Ok(())
}

fn describe_message(m: &Message, opts: &TalkOpts, interactive: bool) -> String {
    let body = match m {
        Message::Text(t) if opts.json => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| t.to_string()),
            Err(_) => t.to_string(),
        },
        Message::Text(t) => t.to_string(),
        Message::Binary(b) if interactive => hex(b),
        Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    };
    if interactive {
        let kind = if m.is_text() { "text" } else { "binary" };
        format!("{} < {kind}: {body}", timestamp())
    } else {
        body
    }
}

fn describe_frame(f: &Frame, interactive: bool) -> String {
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
    if interactive {
        format!("{} < {kind} [{flags}] {body}", timestamp())
    } else {
        format!("{kind} [{flags}] {body}")
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

async fn interactive_input(tx: &Sender) -> Result<u64, Failure> {
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
            Ok(Input::Frame(f)) => tx.send_frame(f).await,
            Ok(Input::Close(r)) => {
                let _ = tx.close(r).await;
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
            if matches!(e, wsc::Error::Closed(_)) {
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
