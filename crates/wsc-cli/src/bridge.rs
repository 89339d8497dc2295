//! Bridges between a WebSocket session and something else: a TCP connection (bytes both ways,
//! `wsc forward`, `wsc serve --forward`) or a program (lines both ways, `--exec`).
//!
//! Bounded as a session is: each side is read only as fast as the other takes what was read
//! (one chunk or line in flight per direction; the session's own queues are bounded), so a
//! slow reader on either end slows the writer on the other instead of growing a buffer.

use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use wsc::{CloseReason, Message, Receiver, Sender};

/// The most bytes read from a TCP connection into one message.
const CHUNK: usize = 64 << 10;

/// How long what was received before the session ended may take to be written out, once it
/// ended, to a TCP connection or a program that reads slowly or not at all.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Resolves [`DRAIN`] after the session ended.
async fn drained(tx: &Sender) {
    tx.close_reason().await;
    tokio::time::sleep(DRAIN).await;
}

/// How long a program may take to exit once its session ended and its stdin was closed,
/// before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How a bridged session ended.
#[derive(Debug)]
pub struct Outcome {
    /// The session's close reason.
    pub reason: CloseReason,
    /// What went wrong on the other end (TCP or the program), if anything did.
    pub problem: Option<String>,
    /// The program's exit status, for `--exec`.
    pub status: Option<std::process::ExitStatus>,
}

/// Closes the session with `code` and `why` (a reason too long for a Close frame is dropped).
async fn close_with(tx: &Sender, code: u16, why: &str) {
    let reason = CloseReason::new(code, why).unwrap_or_else(|_| CloseReason::normal());
    let _ = tx.close(reason).await;
}

/// Copies bytes between the session and a byte stream, each read as one binary message, each
/// message received written as it is (text or binary).
///
/// Half-close: when the stream ends (EOF), an empty binary message says so to the peer, which
/// a wsc bridge turns into shutting down writing on its own TCP connection (an empty message
/// carries no bytes, so no data is lost by this reading). The session closes with 1000 once
/// both directions ended, when the peer closes it, or with 1011 when the stream fails.
pub async fn tcp<R, W>(tx: Sender, mut rx: Receiver, mut read: R, mut write: W) -> Outcome
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Stream to socket; Ok(()) at EOF.
    let up = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match read.read_buf(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send(Message::binary(Bytes::new())).await;
                    return Ok(());
                }
                Ok(_) => {
                    if tx
                        .send(Message::binary(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let why = format!("TCP read failed: {e}");
                    close_with(&tx, 1011, "TCP connection failed").await;
                    return Err(why);
                }
            }
        }
    };
    let up = async {
        tokio::select! {
            r = up => r,
            _ = tx.close_reason() => Ok(()),
        }
    };
    // Socket to stream; Ok(()) when the peer said EOF or the session ended.
    let down = async {
        let mut problem = Ok(());
        // One deadline for all that is left once the session ends, not one per message.
        let drain = drained(&tx);
        tokio::pin!(drain);
        while let Some(m) = rx.recv().await {
            let Ok(m) = m else { break };
            if m.is_empty() {
                break;
            }
            let written = tokio::select! {
                r = write.write_all(m.as_bytes()) => r,
                () = &mut drain => {
                    problem = Err("the TCP connection took nothing for too long".to_owned());
                    break;
                }
            };
            if let Err(e) = written {
                problem = Err(format!("TCP write failed: {e}"));
                close_with(&tx, 1011, "TCP connection failed").await;
                break;
            }
        }
        let _ = write.shutdown().await;
        problem
    };
    let (up, down) = tokio::join!(up, down);
    if tx.is_open() {
        close_with(&tx, 1000, "").await;
    }
    Outcome {
        reason: tx.close_reason().await,
        problem: up.err().or(down.err()),
        status: None,
    }
}

/// Runs `command` (through the shell) for one session: each message received becomes a line
/// on its stdin, each line it prints on stdout a message (text when it is UTF-8, else binary);
/// its stderr is wsc's.
///
/// When the program exits, the session closes with 1000 if it exited with status 0, else with
/// 1011. When the session ends first, the program's stdin is closed and it has
/// [`EXIT_GRACE`] to exit before it is killed. A line longer than the session's largest
/// message closes the session with 1009.
pub async fn exec(tx: Sender, mut rx: Receiver, command: &str) -> Outcome {
    let mut child = match shell(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            close_with(&tx, 1011, "cannot run the program").await;
            return Outcome {
                reason: tx.close_reason().await,
                problem: Some(format!("cannot run {command:?}: {e}")),
                status: None,
            };
        }
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        close_with(&tx, 1011, "cannot run the program").await;
        return Outcome {
            reason: tx.close_reason().await,
            problem: Some("the program's stdin or stdout is missing".to_owned()),
            status: None,
        };
    };
    let limit = tx.max_message_size() as u64;
    // The program's stdout to the socket; Ok(()) at EOF.
    let up = async {
        let mut lines = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut lines)
                .take(limit.saturating_add(1))
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading the program's output: {e}")),
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            } else if line.len() as u64 > limit {
                close_with(&tx, 1009, "line too long").await;
                return Err(format!("the program printed a line over {limit} bytes"));
            }
            let m = match String::from_utf8(std::mem::take(&mut line)) {
                Ok(t) => Message::text(t),
                Err(e) => Message::binary(e.into_bytes()),
            };
            if tx.send(m).await.is_err() {
                return Ok(());
            }
        }
    };
    // The socket to the program's stdin, a line per message, until the last message received
    // before the session ended; stdin is closed when it ends.
    let closed = tx.clone();
    let down = async move {
        // One deadline for all that is left once the session ends, not one per message.
        let drain = drained(&closed);
        tokio::pin!(drain);
        while let Some(Ok(m)) = rx.recv().await {
            let written = async {
                stdin.write_all(m.as_bytes()).await?;
                stdin.write_all(b"\n").await?;
                stdin.flush().await
            };
            // A program that does not read holds its input only a while after the session.
            let written = tokio::select! {
                r = written => r,
                () = &mut drain => break,
            };
            if written.is_err() {
                // The program stopped reading (it exited or closed stdin): what it printed
                // still goes out, and its exit closes the session.
                break;
            }
        }
    };
    let output_ended = tokio::select! {
        // The output first: a failure it closed the session for is what to report.
        biased;
        r = up => Some(r),
        // The session ended first: stdin is closed (dropped with `down`), then the program is
        // waited for, for a bounded time.
        () = async { down.await; tx.close_reason().await; } => None,
    };
    let (mut problem, mut status) = (None, None);
    if let Some(r) = output_ended {
        // The program's output ended: it is exiting, and its status decides the close code.
        problem = r.err();
        status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = tx.close_reason() => None,
        };
    }
    if status.is_none() {
        status = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = child.kill().await;
                child.wait().await.ok()
            }
        };
    }
    if tx.is_open() {
        match status {
            Some(s) if s.success() => close_with(&tx, 1000, "").await,
            Some(s) => close_with(&tx, 1011, &format!("program {s}")).await,
            None => close_with(&tx, 1011, "program lost").await,
        }
    }
    Outcome {
        reason: tx.close_reason().await,
        problem,
        status,
    }
}

/// `command` run by the shell, so that quoting, pipes and variables work as typed.
fn shell(command: &str) -> tokio::process::Command {
    if cfg!(windows) {
        let mut c = tokio::process::Command::new("cmd");
        c.arg("/C").arg(command);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(command);
        c
    }
}
