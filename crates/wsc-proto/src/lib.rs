//! The sans-IO WebSocket protocol core of [wsc](https://docs.rs/wsc): RFC 6455 frames,
//! masking, incremental UTF-8, close codes, the client handshake, extensions and
//! permessage-deflate (RFC 7692).
//!
//! Nothing here does I/O, reads a clock or owns a random generator: bytes go in and come out,
//! and randomness is passed in through [`Entropy`]. The `wsc` crate drives it over tokio.
//!
//! [`Connection`] is the whole protocol after the handshake, deterministic and time passed in:
//! bytes and commands in, events and bytes out, one deadline to sleep until. It owns the close
//! handshake, keepalive, reassembly and what a raw connection leaves out; what the application
//! sends waits in its [`Outbox`]. The pieces it is made of are public too: [`Decoder`] (every
//! RFC 6455 check; [`Decoder::decode_run`] takes a stretch of small whole messages at once as a
//! [`Run`]), [`Assembler`], [`encode_frame`] with keys from [`MaskKeys`], the handshake, the
//! extensions and permessage-deflate. Every [`ProtocolError`] knows the close code to fail with.
//!
//! # Where things are
//!
//! Every item has one path. Frames, messages, close codes, the connection and its parts are
//! at the crate root (`wsc_proto::Connection`, `wsc_proto::CloseCode`). Two groups whose names
//! only read well with their module stay in it, and only there: [`handshake`] (the HTTP/1.1
//! upgrade: request bytes, the response checks, `accept_key`) and [`deflate`]
//! (permessage-deflate: `deflate::DeflateConfig`, the codec, its negotiation).
//!
//! # Driving a connection
//!
//! Time is a [`Duration`](std::time::Duration) since any fixed point the caller picks, the
//! same for every call.
//!
//! - Read from the transport into a buffer you own and call [`handle_read`](Connection::handle_read)
//!   with it; whole frames are taken off its front, a partial one is left for the next read.
//!   [`read_hint`](Connection::read_hint) says how many bytes the frame in progress still needs.
//!   Read only while [`wants_read`](Connection::wants_read); on end of stream call
//!   [`handle_eof`](Connection::handle_eof), on a transport error
//!   [`handle_transport_error`](Connection::handle_transport_error).
//! - After every call, take [`poll_event`](Connection::poll_event) until it returns `None`.
//! - Call [`poll_transmit`](Connection::poll_transmit) and write what it gives, in order,
//!   reporting each write with [`handle_written`](Connection::handle_written).
//! - Sleep until [`poll_timeout`](Connection::poll_timeout) and then call
//!   [`handle_timeout`](Connection::handle_timeout).
//! - Once [`is_finished`](Connection::is_finished), close the transport.
//!
//! If the application's senders share the outbox (through a [`Queue`]), call `poll_transmit`
//! whenever they may have queued something or asked for a close: that is where the connection
//! looks at it.
//!
//! ```
//! use std::time::Duration;
//! use bytes::BytesMut;
//! use wsc_proto::{Config, Connection, Event, Message, Outbox, Role};
//! # #[derive(Default)] struct Seq(u8);
//! # impl wsc_proto::Entropy for Seq { fn fill(&mut self, b: &mut [u8]) { for x in b { self.0 = self.0.wrapping_add(1); *x = self.0 } } }
//!
//! let now = Duration::ZERO;
//! let mut c = Connection::new(Config::new(Role::Client), Outbox::<Seq>::new(1 << 20), Vec::new(), now);
//! // The server sends "hi" and a Ping.
//! c.handle_read(&mut BytesMut::from(&b"\x81\x02hi\x89\x01p"[..]), now);
//! // Small messages from one read come as a run, cut into messages by the reader.
//! let Some(Event::Run(mut run)) = c.poll_event() else { panic!("a run") };
//! assert_eq!(run.next_message(), Some(Message::from("hi")));
//! // The Pong is waiting to go out (masked: the client's frames always are).
//! let mut out = BytesMut::new();
//! c.poll_transmit(&mut out, 1 << 16);
//! assert_eq!(&out[..2], b"\x8a\x81");
//! c.handle_written(out.len());
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod assemble;
mod close;
mod connection;
mod decode;
pub mod deflate;
mod entropy;
mod error;
mod extension;
mod frame;
pub mod handshake;
mod keepalive;
mod mask;
mod message;
mod outbox;
mod run;
mod utf8;

pub use assemble::Assembler;
pub use close::{CloseCode, CloseReason, MAX_REASON_LEN, ReasonTooLong};
pub use connection::{Config, Connection, Event, Failure, Outcome, Queue};
pub use decode::{Decoder, Limits, MAX_PIECE, Role};
pub use entropy::{Entropy, MaskKeys};
pub use error::ProtocolError;
pub use extension::{
    DecodeError, Extension, ExtensionFactory, ExtensionItem, ExtensionParam, encode_message,
    negotiate, parse_extensions,
};
pub use frame::{Frame, OpCode, RSV1, RSV2, RSV3, encode_frame, encode_header, header_len};
pub use keepalive::{Due, Keepalive, ping_timeout};
pub use mask::{MaskKernel, apply_mask, extend_masked, extend_masked_at};
pub use message::{Message, Utf8Bytes};
pub use outbox::{CloseRequest, LARGE_SEND, Outbox, Payload, Refused};
pub use run::Run;
pub use utf8::{InvalidUtf8, Utf8Validator};
