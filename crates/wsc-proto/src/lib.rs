//! The sans-IO WebSocket protocol core of [wsc](https://docs.rs/wsc): RFC 6455 frames,
//! masking, incremental UTF-8, close codes, the client handshake, extensions and
//! permessage-deflate (RFC 7692).
//!
//! Nothing here does I/O, reads a clock or owns a random generator: bytes go in and come out,
//! and randomness is passed in through [`Entropy`]. The `wsc` crate drives it over tokio.
//!
//! The receive path: feed the read buffer to [`Decoder::decode`] until it returns `Ok(None)`,
//! routing control frames yourself and data frames through an [`Assembler`] (default
//! sessions) or straight to the caller (raw sessions); [`Decoder::decode_run`] takes a whole
//! stretch of small complete messages at once as a [`Run`]. The send path: [`encode_frame`] with a
//! mask key from [`MaskKeys`]. Every [`ProtocolError`] knows the close code to fail with.

pub mod assemble;
pub mod close;
pub mod decode;
pub mod deflate;
pub mod entropy;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod run;
pub mod utf8;

pub use assemble::Assembler;
pub use close::{CloseCode, CloseReason, MAX_REASON_LEN, ReasonTooLong};
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
pub use run::Run;
pub use utf8::Utf8Validator;
