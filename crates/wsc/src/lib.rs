#![doc = include_str!("../../../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod connect;
pub mod convert;
mod entropy;
mod error;
mod reconnect;
mod request;
pub mod server;
mod session;
mod trace;
mod transport;

pub use client::{Client, RequestBuilder};
pub use config::ClientBuilder;
pub use error::{Chain, Error, IoContext, Misuse, SizeLimit, TimeoutKind};
pub use reconnect::{
    ConnectionEvent, Disconnect, Events, OnConnect, ReconnectConfig, Reconnecting,
    ReconnectingSender, Retry, RetryPolicy, WhileDisconnected,
};
pub use request::{IntoRequest, Request};
pub use session::{
    Call, Delivery, Frames, IncomingMessage, MessageWriter, Messages, RawReceiver, RawSession,
    Receiver, Sender, Session,
};
#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
pub use transport::proxy::Proxy;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub use transport::tls::Roots;
pub use wsc_proto::deflate::DeflateConfig;
pub use wsc_proto::handshake::HandshakeError;
pub use wsc_proto::{
    CloseCode, CloseReason, DecodeError, Extension, ExtensionFactory, ExtensionParam, Frame,
    MAX_REASON_LEN, Message, OpCode, ProtocolError, ReasonTooLong, Utf8Bytes,
};

/// rustls, for [`ClientBuilder::tls_config`].
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub use rustls;
