//! The permessage-deflate inflater with a limit: whatever the input (compressed bombs
//! included), the output never passes the limit, and going over it is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsc_proto::deflate::{Deflate, DeflateConfig, Negotiated};
use wsc_proto::{DecodeError, Extension};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let limit = 1usize << (ctl % 21); // 1 B .. 1 MiB
    let cfg = DeflateConfig::default();
    // The parameters a server may answer with: window bits and context takeover.
    let params = Negotiated {
        client_max_window_bits: 15,
        server_max_window_bits: 8 + (ctl >> 5) % 8,
        client_no_context_takeover: false,
        server_no_context_takeover: ctl & 0x80 != 0,
    };
    let mut d = Deflate::new(cfg, params);
    // The input as one message cut in two fragments where the control byte says.
    let cut = input.len() * usize::from(ctl % 7) / 7;
    let mut out = Vec::new();
    for (piece, fin) in [(&input[..cut], false), (&input[cut..], true)] {
        match d.decode(piece, fin, &mut out, limit) {
            Ok(()) => assert!(out.len() <= limit, "{} > {limit}", out.len()),
            Err(DecodeError::TooBig { .. }) => {
                assert!(out.len() <= limit.saturating_mul(2) + 64 * 1024);
                return;
            }
            Err(_) => return,
        }
    }
});
