//! The Autobahn testsuite's client testee: `autobahn_client ws://127.0.0.1:9001`.
//!
//! Reads the case count, runs every case echoing each text or binary message with the same
//! opcode, then asks the server to write its reports.

use std::time::Duration;

use wsc::{Client, DeflateConfig, Error, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client: {}", e.chain());
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let base = base.trim_end_matches('/').to_owned();
    let agent = std::env::args().nth(2).unwrap_or_else(|| "wsc".into());
    let client = Client::builder()
        .max_frame_size(usize::MAX)
        .max_message_size(usize::MAX)
        .close_timeout(Duration::from_secs(3))
        // Offering client_no_context_takeover lets the server pick either mode (cases 13.*).
        .deflate(DeflateConfig::default().client_no_context_takeover(true))
        .build()?;

    let mut s = client.connect(format!("{base}/getCaseCount")).await?;
    let count: usize = match s.recv().await {
        Some(Ok(m)) => m.as_text().and_then(|t| t.trim().parse().ok()).unwrap_or(0),
        _ => 0,
    };
    let _ = s.close(wsc::CloseReason::normal()).await;
    eprintln!("autobahn_client: {count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match client.connect(url).await {
            Ok(mut s) => {
                while let Some(Ok(m)) = s.recv().await {
                    let r = match m {
                        Message::Text(t) => s.send(Message::Text(t)).await,
                        Message::Binary(b) => s.send(Message::Binary(b)).await,
                    };
                    if r.is_err() {
                        break;
                    }
                }
                let _ = s.close_reason().await;
            }
            Err(e) => eprintln!("case {case}: {}", e.chain()),
        }
    }
    let s = client
        .connect(format!("{base}/updateReports?agent={agent}"))
        .await?;
    let _ = s.close(wsc::CloseReason::normal()).await;
    Ok(())
}
