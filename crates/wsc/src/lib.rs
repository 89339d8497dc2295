#![doc = include_str!("../../../README.md")]

mod client;
mod config;
mod connect;
mod entropy;
mod error;
mod request;
pub mod server;
mod session;

pub use client::{Client, RequestBuilder};
pub use config::ClientBuilder;
pub use error::{Error, TimeoutKind};
pub use request::{IntoRequest, Request};
pub use session::{Call, RawReceiver, RawSession, Receiver, Sender, Session};
pub use wsc_proto::deflate::DeflateConfig;
pub use wsc_proto::{
    CloseCode, CloseReason, Extension, ExtensionFactory, ExtensionParam, Frame, Message, OpCode,
    Utf8Bytes,
};

/// The protocol core, for custom extensions and low-level use.
pub use wsc_proto as proto;
