//! `wsc`: talk to any WebSocket server from a terminal or a script.
//!
//! Uses only wsc's public API.
#![forbid(unsafe_code)]

mod bench;
mod bridge;
mod forward;
mod opts;
mod serve;
mod shell;
mod talk;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use opts::ConnectOpts;

const AFTER_HELP: &str = "\
Examples:
  wsc                                   talk to a built-in echo server (no network needed)
  wsc ws://127.0.0.1:9001/chat          interactive when stdin is a terminal
  printf 'a\\nb\\n' | wsc ws://host/echo  one message per line; replies printed one per line
  wsc -H 'Authorization: Bearer t' --protocol chat ws://host/
  echo '{\"op\":1}' | wsc -1 ws://host/          one message out, one reply printed, exit
  echo subscribe | wsc --count 3 --timestamps ws://host/feed
  wsc --reconnect --no-close ws://host/feed     reconnect when dropped; print until closed
  wsc serve 127.0.0.1:9001 --broadcast  a loopback echo (or broadcast) server
  wsc serve 0.0.0.0:8443 --cert chain.pem --key key.pem -v   a wss server, a line per session
  wsc bench ws://127.0.0.1:9001 -c 50 -s 1024 -d 10s
  wsc --exec 'jq -c --unbuffered .' ws://host/   a program on the socket: messages as its lines
  wsc serve 127.0.0.1:9001 --exec 'stdbuf -oL tr a-z A-Z'   a program per session
  wsc forward tcp-listen:127.0.0.1:2222 wss://host/ssh   TCP connections carried over WebSocket
  wsc serve 0.0.0.0:9001 --forward tcp:127.0.0.1:22     each session carried to a TCP service
  wsc completions bash > ~/.local/share/bash-completion/completions/wsc
  wsc man > ~/.local/share/man/man1/wsc.1

Exit codes:
  0  closed cleanly (1000 or 1001)          5  timed out (connect, handshake, ping, close)
  1  other error                             6  the server broke the protocol (1002/1007/1009)
  2  bad usage or input (URL, header, flag)  7  the connection dropped without a Close (1006)
  3  could not connect (DNS, refused, I/O)   8  the server closed with another code
  4  the server refused the handshake        9  the --exec program exited with a non-zero status";

/// `wsc --version`: the version and what this binary can do. wsc-cli has no cargo features of
/// its own; these are the capabilities of the wsc library it is built with, all always compiled in.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (tls: rustls with aws-lc-rs, native and webpki roots; proxies: http, https, socks5;",
    " compression: permessage-deflate)"
);

#[derive(Parser, Debug)]
#[command(name = "wsc", version = VERSION, about = "Talk to any WebSocket server from a terminal or a script", after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
struct Cli {
    /// ws:// or wss:// URL; without one, wsc starts a built-in echo server and talks to it.
    url: Option<String>,
    #[command(flatten)]
    connect: ConnectOpts,
    #[command(flatten)]
    talk: talk::TalkOpts,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a small echo (or broadcast) server, on loopback unless told otherwise.
    Serve(serve::ServeOpts),
    /// Carry TCP connections over WebSocket: each connection accepted on ADDR becomes a
    /// session to URL (bytes as binary messages, both ways).
    #[command(after_help = "\
Examples:
  wsc forward tcp-listen:127.0.0.1:2222 wss://host/ssh   then: ssh -p 2222 127.0.0.1
  wsc serve 127.0.0.1:9001 --forward tcp:127.0.0.1:22 &  the other end, in front of sshd
  wsc forward tcp-listen:127.0.0.1:8080 ws://127.0.0.1:9001/ --compress -v

A connection's end of input (EOF) is sent as an empty binary message, which the wsc at the other
end turns into a half-close of its TCP connection.")]
    Forward(Box<forward::ForwardOpts>),
    /// Load-test a WebSocket echo server: N connections, message size, rate, duration.
    Bench(Box<bench::BenchOpts>),
    /// Print the completion script for SHELL on stdout.
    #[command(after_help = "\
Install (then start a new shell):
  wsc completions bash > ~/.local/share/bash-completion/completions/wsc
  wsc completions zsh > ~/.zfunc/_wsc          with fpath+=(~/.zfunc) before compinit in ~/.zshrc
  wsc completions fish > ~/.config/fish/completions/wsc.fish")]
    Completions(shell::CompletionsOpts),
    /// Print the man page (roff) on stdout, or write a page per command with --out DIR.
    #[command(after_help = "\
Install:
  wsc man > ~/.local/share/man/man1/wsc.1
  wsc man --out ~/.local/share/man/man1      wsc.1 and wsc-serve.1, wsc-forward.1, …")]
    Man(shell::ManOpts),
}

/// An error with the exit code a script can rely on.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// One readable line.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Maps a library error to an exit code and a one-line message.
pub fn failure(e: &wsc::Error) -> Failure {
    use wsc::Error as E;
    let mut message = e.chain().to_string();
    if let E::HandshakeRefused { body, .. } = e {
        let body = String::from_utf8_lossy(body);
        let body = body.trim();
        if !body.is_empty() {
            message.push_str(&format!(": {}", body.lines().next().unwrap_or_default()));
        }
    }
    let code = match e {
        E::InvalidUrl { .. } | E::InvalidConfig(_) => 2,
        E::Io { .. } | E::Proxy { .. } | E::Tls { .. } | E::Redirect(_) => 3,
        E::HandshakeRefused { .. } | E::Handshake(_) => 4,
        E::Timeout(_) => 5,
        E::Protocol { .. } | E::MessageTooBig { .. } => 6,
        E::ClosedAbnormally => 7,
        E::Closed(Some(r)) if r.code() == wsc::CloseCode::CLOSED_ABNORMALLY => 7,
        E::Closed(_) => 8,
        _ => 1,
    };
    Failure { code, message }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as every other error: the first line of clap's message.
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("bad usage")
                .trim_start_matches("error: ");
            eprintln!("wsc: {first} (see wsc --help)");
            return ExitCode::from(2);
        }
    };
    // These only print what clap knows: no runtime needed.
    let early = match &cli.command {
        Some(Command::Completions(o)) => Some(shell::completions(o, Cli::command())),
        Some(Command::Man(o)) => Some(shell::man(o, Cli::command())),
        _ => None,
    };
    if let Some(result) = early {
        return exit(result);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsc: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Some(Command::Serve(o)) => serve::run(o).await,
            Some(Command::Forward(o)) => forward::run(*o).await,
            Some(Command::Bench(o)) => bench::run(*o, &cli.connect).await,
            Some(Command::Completions(_) | Command::Man(_)) => Ok(()),
            None => talk::run(cli.url, &cli.connect, &cli.talk).await,
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    exit(result)
}

/// The exit code of `result`, its error printed as one line.
fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("wsc: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}
