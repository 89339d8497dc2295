//! The driver's own tests: what every session costs in memory, and what a quiet one gives
//! back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use wsc_proto::Role;

use super::super::buffers::TRIM_AFTER;
use super::super::shared::{SessionQueue, Shared};
use super::Driver;
use crate::session::{Call, SessionConfig};

/// Every session holds these; growing them grows each idle connection. The driver is
/// what tokio's task cell holds, and the cell is sized in steps of 128 bytes on x86-64
/// (104 of them tokio's own): past 280 bytes the driver costs another step.
#[test]
fn per_session_state_stays_small() {
    use std::mem::size_of;
    let driver = size_of::<Driver<crate::transport::BoxIo>>();
    let shared = size_of::<Shared>();
    let conn = size_of::<wsc_proto::Connection<SessionQueue>>();
    let session = size_of::<crate::Session>();
    eprintln!("driver {driver} connection {conn} shared {shared} session {session}");
    assert!(driver <= 280, "driver {driver}");
    assert!(shared <= 368, "shared {shared}");
    assert!(size_of::<Call>() <= 32);
    // What a caller holds (boxed or in its task): 120 bytes take a 128-byte block.
    assert!(session <= 120, "session {session}");
}

fn poll(d: &mut Driver<tokio::io::DuplexStream>) -> Poll<()> {
    Pin::new(d).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// A session that has moved bytes and then gone quiet gives back its buffers and, with no
/// deadline left (raw: no keepalive), its timer; a default session keeps the keepalive's.
#[tokio::test(start_paused = true)]
async fn a_quiet_session_gives_back_its_buffers_and_an_idle_timer() {
    for raw in [true, false] {
        let url = url::Url::parse("ws://127.0.0.1:1/").unwrap();
        let config = Arc::new(SessionConfig::default());
        let call = Call::new(&url, [], [], None, Vec::new());
        let shared = Shared::new(config, Vec::new(), Role::Client, call);
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut d = Driver::new(io, shared.clone(), BytesMut::new(), raw, Vec::new());
        assert!(poll(&mut d).is_pending());
        assert!(d.bufs.is_none(), "nothing held before any byte moved");
        peer.write_all(b"\x81\x02hi").await.unwrap();
        assert!(poll(&mut d).is_pending());
        assert!(
            d.bufs.is_some() && d.timer.is_some(),
            "buffers and the trim timer"
        );
        assert_eq!(shared.inc().items.len(), 1, "the message was delivered");
        for _ in 0..3 {
            tokio::time::advance(TRIM_AFTER + Duration::from_millis(10)).await;
            assert!(poll(&mut d).is_pending());
        }
        assert!(d.bufs.is_none(), "buffers given back (raw {raw})");
        assert_eq!(d.timer.is_none(), raw, "the timer (raw {raw})");
        if !raw {
            // The keepalive still fires from a session holding no buffers.
            tokio::time::advance(Duration::from_secs(20)).await;
            assert!(poll(&mut d).is_pending());
            let mut head = [0u8; 2];
            tokio::io::AsyncReadExt::read_exact(&mut peer, &mut head)
                .await
                .unwrap();
            assert_eq!(head, [0x89, 0x88], "a masked 8-byte Ping");
        }
    }
}

/// A client's settings made on one runtime (here a paused clock an hour ahead) drive
/// sessions on another: each session's time runs on the clock of the runtime it lives on.
#[test]
fn session_time_runs_on_the_runtime_that_drives_it() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let config = paused().block_on(async {
        tokio::time::advance(Duration::from_secs(3600)).await;
        Arc::new(SessionConfig::default())
    });
    paused().block_on(async move {
        let url = url::Url::parse("ws://127.0.0.1:1/").unwrap();
        let call = Call::new(&url, [], [], None, Vec::new());
        let shared = Shared::new(config, Vec::new(), Role::Client, call);
        let t0 = shared.now();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(shared.now() - t0, Duration::from_millis(100));
    });
}
