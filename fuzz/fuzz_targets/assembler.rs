//! The decoder and the message assembler together, with permessage-deflate negotiated: every
//! message is within the limit and a text message is valid UTF-8; nothing panics.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsc_proto::deflate::{Deflate, DeflateConfig};
use wsc_proto::{Assembler, Decoder, Extension, Limits, Message, Role};

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(
        Role::Client,
        Limits {
            max_frame_size: MAX,
            max_message_size: MAX,
        },
    );
    d.set_allowed_rsv(0x40);
    let cfg = DeflateConfig::default();
    let params = cfg.negotiate(&[]).unwrap();
    let mut exts: Vec<Box<dyn Extension>> = vec![Box::new(Deflate::new(cfg, params))];
    let mut a = Assembler::new(MAX);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = d.decode(&mut buf) {
        if f.opcode.is_control() {
            continue;
        }
        match a.push(f, &mut exts) {
            Ok(Some(m)) => {
                assert!(m.len() <= MAX);
                if let Message::Text(t) = &m {
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                }
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
});
