//! The frame decoder: the whole input at once, byte by byte, and in chunks cut where the input
//! says must give the same frames and the same error, for both roles, with and without RSV
//! bits allowed, with large frames whole and handed out in pieces.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsc_proto::{Decoder, Frame, Limits, ProtocolError, Role};

const LIMITS: Limits = Limits {
    max_frame_size: 1 << 16,
    max_message_size: 1 << 16,
};

/// Everything the decoder makes of `chunks` fed in order: the frames, then the error or the
/// number of bytes left undecoded.
fn run(
    role: Role,
    rsv: u8,
    piece: usize,
    chunks: &mut dyn Iterator<Item = &[u8]>,
) -> (Vec<Frame>, Result<usize, ProtocolError>) {
    // In pieces, `max_frame_size` is the piece size.
    let limits = match piece {
        0 => LIMITS,
        _ => Limits {
            max_frame_size: piece,
            ..LIMITS
        },
    };
    let mut d = Decoder::new(role, limits);
    d.set_allowed_rsv(rsv);
    d.set_pieces(piece != 0);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= LIMITS.max_frame_size);
                    assert!(piece == 0 || f.opcode.is_control() || f.payload.len() <= piece);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => return (frames, Err(e)),
            }
        }
    }
    (frames, Ok(buf.len()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, input)) = data.split_first() else {
        return;
    };
    // Piece sizes from the first byte too (0: frames whole).
    let pieces = [0, 1 + usize::from(cuts >> 4) * 13];
    for role in [Role::Client, Role::Server] {
        for rsv in [0u8, 0x40, 0x70] {
            for piece in pieces {
                let whole = run(role, rsv, piece, &mut std::iter::once(input));
                let bytes = run(role, rsv, piece, &mut input.chunks(1));
                assert_eq!(whole, bytes, "byte by byte differs");
                // Chunks of sizes taken from the first byte, cycling.
                let step = usize::from(cuts % 17) + 1;
                let chunked = run(role, rsv, piece, &mut input.chunks(step));
                assert_eq!(whole, chunked, "chunks of {step} differ");
            }
        }
    }
});
