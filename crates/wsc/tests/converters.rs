//! Typed messages through converters, against the Python `websockets` echo server.
#![cfg(any(feature = "json", feature = "cbor", feature = "msgpack"))]

mod common;

use serde::{Deserialize, Serialize};
use wsc::{Client, CloseReason, Error};

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Trade {
    id: u64,
    symbol: String,
    price: f64,
    tags: Vec<String>,
    venue: Option<String>,
}

fn trade(i: u64) -> Trade {
    Trade {
        id: i,
        symbol: "WSC".into(),
        price: 12.5 + i as f64,
        tags: vec!["a".into(), "é".into()],
        venue: i.is_multiple_of(2).then(|| "X".into()),
    }
}

async fn round_trip(client: Client, expect_text: bool) {
    let peer = common::python_server(&[]);
    let mut s = client.connect(peer.url("/")).await.unwrap();
    assert!(s.converter().is_some());
    for i in 0..5 {
        s.send_serialized(&trade(i)).await.unwrap();
    }
    for i in 0..5 {
        assert_eq!(s.receive_deserialized::<Trade>().await.unwrap(), trade(i));
    }
    // The kind of frame on the wire is the format's.
    s.send_serialized(&trade(9)).await.unwrap();
    assert_eq!(s.recv().await.unwrap().unwrap().is_text(), expect_text);
    s.close(CloseReason::normal()).await.unwrap();
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_round_trips_as_text() {
    round_trip(
        Client::builder()
            .converter(wsc::convert::Json)
            .build()
            .unwrap(),
        true,
    )
    .await;
}

#[cfg(feature = "cbor")]
#[tokio::test]
async fn cbor_round_trips_as_binary() {
    round_trip(
        Client::builder()
            .converter(wsc::convert::Cbor)
            .build()
            .unwrap(),
        false,
    )
    .await;
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn msgpack_round_trips_as_binary() {
    round_trip(
        Client::builder()
            .converter(wsc::convert::MessagePack)
            .build()
            .unwrap(),
        false,
    )
    .await;
}

#[cfg(feature = "json")]
#[tokio::test]
async fn malformed_json_keeps_the_message_in_the_error() {
    let peer = common::python_server(&[]);
    let client = Client::builder()
        .converter(wsc::convert::Json)
        .build()
        .unwrap();
    let mut s = client.connect(peer.url("/bad-json")).await.unwrap();
    match s.receive_deserialized::<Trade>().await {
        Err(Error::Deserialize { message, source }) => {
            assert_eq!(message.as_text(), Some(r#"{"id": 1, "name": "#));
            assert!(source.to_string().contains("EOF"), "{source}");
        }
        other => panic!("expected a deserialize error, got {other:?}"),
    }
    // Exactly one message was consumed; the session goes on.
    s.send_serialized(&trade(1)).await.unwrap();
    assert_eq!(s.receive_deserialized::<Trade>().await.unwrap(), trade(1));
    // A binary message is not for the JSON converter.
    s.send(wsc::Message::binary(vec![1u8, 2])).await.unwrap();
    match s.receive_deserialized::<Trade>().await {
        Err(Error::Deserialize { message, source }) => {
            assert!(message.is_binary());
            assert!(
                source.to_string().contains("does not read binary"),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
    s.close(CloseReason::normal()).await.unwrap();
    assert!(matches!(
        s.receive_deserialized::<Trade>().await,
        Err(Error::Closed(_))
    ));
}

#[tokio::test]
async fn no_converter_is_an_error() {
    let peer = common::python_server(&[]);
    let mut s = Client::new().connect(peer.url("/")).await.unwrap();
    assert!(matches!(
        s.send_serialized(&trade(1)).await,
        Err(Error::NoConverter)
    ));
    assert!(matches!(
        s.receive_deserialized::<Trade>().await,
        Err(Error::NoConverter)
    ));
    s.close(CloseReason::normal()).await.unwrap();
}
