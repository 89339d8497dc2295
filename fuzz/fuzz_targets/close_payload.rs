//! Close payloads: parsing never panics, and a reason that parses encodes back to a payload
//! that parses to the same reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsc_proto::{Frame, OpCode};

fuzz_target!(|data: &[u8]| {
    let frame = Frame::new(OpCode::Close, bytes::Bytes::copy_from_slice(data));
    if let Ok(Some(reason)) = frame.close_reason() {
        let again = Frame::new(OpCode::Close, reason.to_payload());
        assert_eq!(again.close_reason().unwrap(), Some(reason));
    }
});
