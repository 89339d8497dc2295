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

pub mod assemble;
pub mod close;
pub mod connection;
pub mod decode;
pub mod deflate;
pub mod entropy;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod keepalive;
pub mod mask;
pub mod message;
pub mod outbox;
pub mod run;
pub mod utf8;

pub use assemble::Assembler;
pub use close::{CloseCode, CloseReason, MAX_REASON_LEN, ReasonTooLong};
pub use connection::{Connection, Event, Failure, Outcome};
pub use decode::{Decoder, Limits, Role};
pub use entropy::{Entropy, MaskKeys};
pub use error::ProtocolError;
pub use extension::{
    DecodeError, Extension, ExtensionFactory, ExtensionItem, ExtensionParam, parse_extensions,
};
pub use frame::{Frame, OpCode, RSV1, RSV2, RSV3, encode_frame, encode_header, header_len};
pub use handshake::HandshakeError;
pub use mask::apply_mask;
pub use message::{Message, Utf8Bytes};
pub use outbox::{Outbox, Payload, Refused};
pub use run::Run;
pub use utf8::Utf8Validator;
