//! The `tracing` feature's events, captured by a subscriber as an application would install
//! one: connecting (address, TLS version and ALPN), the handshake (status, subprotocol,
//! extensions) and the close (code and reason), against the Python `websockets` server.
#![cfg(feature = "tracing")]

mod common;

use std::fmt::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use wsc::{Client, CloseReason, Message};

/// Every span opened and event emitted, one line each: `event <message> field=value…`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl Capture {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The one line with `message`, or a failure that shows them all.
    fn line(&self, message: &str) -> String {
        let lines = self.lines();
        let found: Vec<_> = lines.iter().filter(|l| l.contains(message)).collect();
        assert_eq!(found.len(), 1, "{message:?} once in {lines:#?}");
        found[0].clone()
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut f = Fields(format!("span {}", attrs.metadata().name()));
        attrs.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut f = Fields(format!("event {}", event.metadata().level()));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
}

/// A session's events for one connect, the handshake and a close the server starts, in a
/// bounded time; the subscriber sees the session's task too (same thread).
async fn run(client: &Client, url: &str) {
    let work = async {
        let mut s = client
            .request(url)
            .protocol("chat")
            .connect()
            .await
            .unwrap();
        s.send(Message::text("close:4001:bye")).await.unwrap();
        while s.recv().await.is_some() {}
        s.close(CloseReason::normal()).await.ok();
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("the session ended in time");
}

#[tokio::test]
async fn connect_handshake_and_close_are_traced() {
    let peer = common::python_server(&["--deflate"]);
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let client = Client::builder()
        .deflate(wsc::DeflateConfig::default())
        .build()
        .unwrap();
    let url = peer.url("/");
    run(&client, &url).await;

    assert!(
        capture
            .line("span wsc.connect")
            .contains(&format!("url={url}")),
        "{:#?}",
        capture.lines()
    );
    let connecting = capture.line("wsc: connecting");
    assert!(connecting.contains("host=\"127.0.0.1\""), "{connecting}");
    assert!(connecting.contains("tls=false"), "{connecting}");
    assert!(capture.line("wsc: TCP connected").contains("127.0.0.1"));
    let handshake = capture.line("wsc: handshake done");
    assert!(handshake.contains("status=101"), "{handshake}");
    assert!(handshake.contains("subprotocol=\"chat\""), "{handshake}");
    assert!(handshake.contains("permessage-deflate"), "{handshake}");
    let closed = capture.line("wsc: session closed");
    assert!(closed.contains("code=4001"), "{closed}");
    assert!(closed.contains("reason=\"bye\""), "{closed}");
    assert!(closed.contains("peer_code=4001"), "{closed}");
}

/// wss: the TLS version and ALPN, through a TLS front (tokio-rustls with a fresh certificate)
/// that relays to the Python server.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn tls_version_and_alpn_are_traced() {
    use tokio_rustls::rustls;
    let peer = common::python_server(&[]);
    let backend = peer.url("/");
    let backend = backend
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    // The provider named: in a workspace build rustls has two, and picks none by itself.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut back = tokio::net::TcpStream::connect(&backend).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
    });

    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let client = Client::builder()
        .tls_roots(wsc::Roots::None)
        .add_root_certificates_pem(cert.cert.pem().as_bytes())
        .build()
        .unwrap();
    run(&client, &format!("wss://localhost:{port}/")).await;

    assert!(capture.line("wsc: connecting").contains("tls=true"));
    let tls = capture.line("wsc: TLS established");
    assert!(tls.contains("host=\"localhost\""), "{tls}");
    assert!(tls.contains("version=\"TLSv1_3\""), "{tls}");
    assert!(tls.contains("alpn=\"http/1.1\""), "{tls}");
    assert!(capture.line("wsc: handshake done").contains("status=101"));
    assert!(capture.line("wsc: session closed").contains("code=4001"));
}
