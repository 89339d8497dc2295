//! Raw tokio TCP servers that favour no client: they answer the upgrade by hand and then
//! blast pre-encoded frames, sink exactly the expected bytes, echo, or hold connections idle.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsc_proto::{OpCode, encode_frame, header_len};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Blast,
    Sink,
    Echo,
    Idle,
    /// Reads and decodes frames of any size until the client's Close, then closes.
    Drain,
}

/// Reads the upgrade request and answers 101; returns bytes read past the request.
pub async fn accept_upgrade(s: &mut TcpStream) -> std::io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let key = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            let accept = wsc_proto::handshake::accept_key(&key);
            s.write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes()).await?;
            let _ = buf.split_to(end + 4);
            return Ok(buf);
        }
    }
}

const CLOSE: &[u8] = &[0x88, 0x02, 0x03, 0xe8];

/// After our Close: wait for the client's Close (or EOF), then return so the connection is
/// dropped: the server closes TCP first (RFC 6455 §7.1.1).
async fn drain_until_eof(s: &mut TcpStream) {
    let mut b = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = 0;
        while let Ok(n) = s.read(&mut b).await {
            got += n;
            if n == 0 || got >= 6 {
                break;
            }
        }
    })
    .await;
}

async fn blast(mut s: TcpStream, size: usize, count: u64) -> std::io::Result<()> {
    accept_upgrade(&mut s).await?;
    let payload = vec![0x5a_u8; size];
    let per_frame = header_len(size, false) + size;
    let frames_per_block = (256 * 1024 / per_frame).max(1);
    let mut block = BytesMut::with_capacity(per_frame * frames_per_block);
    for _ in 0..frames_per_block {
        encode_frame(&mut block, OpCode::Binary, true, 0, &payload, None);
    }
    let mut left = count;
    while left > 0 {
        let n = left.min(frames_per_block as u64) as usize;
        s.write_all(&block[..n * per_frame]).await?;
        left -= n as u64;
    }
    s.write_all(CLOSE).await?;
    drain_until_eof(&mut s).await;
    Ok(())
}

async fn sink(mut s: TcpStream, size: usize, count: u64) -> std::io::Result<()> {
    let leftover = accept_upgrade(&mut s).await?;
    let total = (header_len(size, true) + size) as u64 * count;
    let mut got = leftover.len() as u64;
    let mut b = vec![0u8; 256 * 1024];
    while got < total {
        let n = s.read(&mut b).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n as u64;
    }
    s.write_all(CLOSE).await?;
    drain_until_eof(&mut s).await;
    Ok(())
}

async fn drain(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = accept_upgrade(&mut s).await?;
    let mut decoder = wsc_proto::Decoder::new(
        wsc_proto::Role::Server,
        wsc_proto::Limits {
            max_frame_size: usize::MAX,
            max_message_size: usize::MAX,
        },
    );
    loop {
        while let Ok(Some(f)) = decoder.decode(&mut buf) {
            if f.opcode == OpCode::Close {
                s.write_all(CLOSE).await?;
                drain_until_eof(&mut s).await;
                return Ok(());
            }
        }
        buf.reserve(256 * 1024);
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = accept_upgrade(&mut s).await?;
    let mut out = BytesMut::new();
    let mut decoder = wsc_proto::Decoder::new(
        wsc_proto::Role::Server,
        wsc_proto::Limits {
            max_frame_size: usize::MAX,
            max_message_size: usize::MAX,
        },
    );
    loop {
        while let Ok(Some(f)) = decoder.decode(&mut buf) {
            match f.opcode {
                OpCode::Close => {
                    s.write_all(CLOSE).await?;
                    return Ok(());
                }
                OpCode::Ping => encode_frame(&mut out, OpCode::Pong, true, 0, &f.payload, None),
                OpCode::Pong => {}
                op => encode_frame(&mut out, op, f.fin, 0, &f.payload, None),
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn idle(mut s: TcpStream) -> std::io::Result<()> {
    accept_upgrade(&mut s).await?;
    drain_until_eof_forever(&mut s).await;
    Ok(())
}

async fn drain_until_eof_forever(s: &mut TcpStream) {
    let mut b = [0u8; 512];
    while let Ok(n) = s.read(&mut b).await {
        if n == 0 {
            break;
        }
    }
}

/// Serves `kind` on a free loopback port, printing `PORT <n>`, until killed.
pub async fn serve(kind: Kind, size: usize, count: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = match kind {
                Kind::Blast => blast(s, size, count).await,
                Kind::Sink => sink(s, size, count).await,
                Kind::Echo => echo(s).await,
                Kind::Idle => idle(s).await,
                Kind::Drain => drain(s).await,
            };
        });
    }
}
