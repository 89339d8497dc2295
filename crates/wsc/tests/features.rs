//! What a call that needs a feature left out says: it names the feature, before any I/O.
#![cfg(any(not(feature = "rustls"), not(feature = "native-roots")))]

use wsc::{Client, Error};

/// wss:// in a build without `rustls` is refused with the feature's name, whatever the host
/// (nothing is connected: the host does not exist).
#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn wss_without_rustls_names_the_feature() {
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        Client::new().connect("wss://wsc-feature-test.invalid/"),
    )
    .await
    .expect("refused at once");
    match r {
        Err(e @ Error::InvalidUrl { .. }) => {
            assert!(
                e.to_string()
                    .contains("wss:// needs the `rustls` feature of wsc"),
                "{e}"
            );
        }
        other => panic!("expected InvalidUrl, got {:?}", other.map(|_| ())),
    }
}

/// A root store whose feature is off is refused with that feature's name at the first wss
/// connect (the roots are read then), before the TLS handshake.
#[cfg(all(feature = "rustls", not(feature = "native-roots")))]
#[tokio::test]
async fn platform_roots_without_native_roots_name_the_feature() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        Client::new().connect(format!("wss://127.0.0.1:{port}/")),
    )
    .await
    .expect("refused at once");
    match r {
        Err(e @ Error::InvalidConfig(_)) => {
            assert!(
                e.to_string().contains("needs the `native-roots` feature"),
                "{e}"
            );
        }
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
}
