//! The handshake response parser: never panics, a complete head is never longer than the
//! input, every prefix of a complete head is incomplete (or the same error), and the checks
//! that follow never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsc_proto::handshake::{check_upgrade, parse_response};

fuzz_target!(|data: &[u8]| {
    let whole = parse_response(data);
    if let Ok(Some((resp, len))) = &whole {
        assert!(*len <= data.len());
        for cut in [0, len / 2, len.saturating_sub(1)] {
            match parse_response(&data[..cut]) {
                Ok(None) | Err(_) => {}
                Ok(Some((_, l))) => assert!(l <= cut),
            }
        }
        let _ = check_upgrade(resp, "dGhlIHNhbXBsZSBub25jZQ==", &["chat".to_owned()]);
        let _ = resp
            .header("sec-websocket-extensions")
            .map(wsc_proto::parse_extensions);
    }
});
