//! Masking (RFC 6455 §5.3): the one hot loop of the send path.
//!
//! Sixteen bytes at a time (the compiler emits SIMD XORs); the key is rotated for an `offset`
//! so that a payload can be masked in pieces. [`extend_masked`] copies and masks in one pass
//! for the send path, and `extend_small_frame` builds a whole small frame, both writing into
//! the buffer's spare capacity (the crate's two `unsafe` blocks).

use bytes::BytesMut;

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the masked payload.
///
/// ```
/// let mut data = *b"Hello";
/// wsc_proto::apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 §5.7
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    let k16 = key16(key);
    let (chunks, rest) = buf.as_chunks_mut::<16>();
    for c in chunks {
        *c = xor16(c, &k16);
    }
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Appends `src` masked with `key` to `out`: one pass over `src`, each masked byte written
/// once, straight into `out`'s spare capacity (masking into a scratch buffer and copying costs
/// a second pass; bench/RESULTS.md has the figures).
///
/// ```
/// let mut out = bytes::BytesMut::new();
/// wsc_proto::extend_masked(&mut out, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(&out[..], [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 §5.7
/// ```
pub fn extend_masked(out: &mut BytesMut, src: &[u8], key: [u8; 4]) {
    out.reserve(src.len());
    let (blocks, rest) = src.as_chunks::<64>();
    if !blocks.is_empty() {
        extend_masked_blocks(out, blocks, key);
    }
    // 64 is a multiple of 4: the rest starts at key offset 0.
    let start = out.len();
    out.extend_from_slice(rest);
    apply_mask(&mut out[start..], key, 0);
}

/// Appends `src` masked with `key` to `out`, as if `src` started `offset` bytes into the
/// masked payload: a large payload can be masked piece by piece, each piece just before it is
/// written, while it is still in cache.
///
/// ```
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut out = bytes::BytesMut::new();
/// wsc_proto::extend_masked_at(&mut out, b"Hel", key, 0);
/// wsc_proto::extend_masked_at(&mut out, b"lo", key, 3);
/// assert_eq!(&out[..], [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 §5.7
/// ```
pub fn extend_masked_at(out: &mut BytesMut, src: &[u8], key: [u8; 4], offset: usize) {
    extend_masked(out, src, rotate(key, offset));
}

/// Marks masked bytes written into spare capacity as initialized (one of wsc's two `unsafe`).
#[inline(never)]
#[allow(unsafe_code)]
fn extend_masked_blocks(out: &mut BytesMut, blocks: &[[u8; 64]], key: [u8; 4]) {
    let k16 = key16(key);
    let n = blocks.len() * 64;
    // Panics unless the caller reserved room for `n` more bytes.
    let (dst, _) = out.spare_capacity_mut()[..n].as_chunks_mut::<64>();
    for (d, s) in dst.iter_mut().zip(blocks) {
        // Sixty-four bytes per step: four SIMD XORs between one loop test.
        let (d, s) = (d.as_chunks_mut::<16>().0, s.as_chunks::<16>().0);
        for i in 0..4 {
            d[i] = xor16(&s[i], &k16).map(std::mem::MaybeUninit::new);
        }
    }
    let len = out.len() + n;
    // SAFETY: `dst` is the first `n` bytes of the spare capacity, cut into `n / 64` chunks
    // of 64 (none left over); the loop zips them with the `n / 64` source blocks and writes
    // every byte of each, so the bytes up to `len` are initialized.
    unsafe { out.set_len(len) };
}

/// Appends a masked frame of fewer than 126 payload bytes: the two header bytes `head`, the
/// key, then `payload` masked, each byte stored once straight into `out`'s spare capacity.
/// It must not build the frame elsewhere and copy it: that copy reads back bytes just stored
/// in pieces and stalls on store forwarding (bench/RESULTS.md).
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn extend_small_frame(out: &mut BytesMut, head: [u8; 2], key: [u8; 4], payload: &[u8]) {
    let len = 6 + payload.len();
    out.reserve(len);
    // Panics unless `reserve` made room (it does).
    let dst = &mut out.spare_capacity_mut()[..len];
    let (h, body) = dst.split_at_mut(6);
    for (d, s) in h.iter_mut().zip(head.iter().chain(&key)) {
        d.write(*s);
    }
    let k16 = key16(key);
    let (dc, dt) = body.as_chunks_mut::<16>();
    let (sc, st) = payload.as_chunks::<16>();
    for (d, s) in dc.iter_mut().zip(sc) {
        *d = xor16(s, &k16).map(std::mem::MaybeUninit::new);
    }
    for (i, (d, s)) in dt.iter_mut().zip(st).enumerate() {
        d.write(s ^ key[i & 3]);
    }
    let total = out.len() + len;
    // SAFETY: `dst` is the first `len` bytes of the spare capacity: `h` (6 bytes) is written
    // from `head` and `key` (2 + 4 bytes), and `body` has `payload`'s length, so its 16-byte
    // chunks and its tail zip one to one with `payload`'s and each byte is written; the bytes
    // up to `total` are initialized.
    unsafe { out.set_len(total) };
}

#[inline(always)]
fn key16(key: [u8; 4]) -> [u8; 16] {
    std::array::from_fn(|i| key[i & 3])
}

/// Sixteen bytes at a time: the compiler turns this into one SIMD XOR (SSE2 is baseline on
/// x86-64, NEON on aarch64), without `unsafe`.
#[inline(always)]
fn xor16(a: &[u8; 16], k: &[u8; 16]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] ^ k[i])
}

#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset & 3;
    [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    proptest! {
        #[test]
        fn matches_scalar(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], split in 0usize..300) {
            let mut a = data.clone();
            scalar(&mut a, key, 0);
            let mut b = data.clone();
            let split = split.min(b.len());
            let (x, y) = b.split_at_mut(split);
            apply_mask(x, key, 0);
            apply_mask(y, key, split);
            prop_assert_eq!(&a, &b);
            let mut c = BytesMut::from(&b"prefix"[..]);
            extend_masked(&mut c, &data, key);
            prop_assert_eq!(&c[..6], b"prefix");
            prop_assert_eq!(&c[6..], &a[..]);
        }

        #[test]
        fn extend_masked_matches_scalar_across_blocks(len in 0usize..5000, key: [u8; 4], seed: u8) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut a = data.clone();
            scalar(&mut a, key, 0);
            let mut c = BytesMut::new();
            extend_masked(&mut c, &data, key);
            prop_assert_eq!(&c[..], &a[..]);
        }

        #[test]
        fn extend_masked_at_pieces_equal_the_whole(data in proptest::collection::vec(any::<u8>(), 0..700), key: [u8; 4], cuts in proptest::collection::vec(0usize..700, 0..6)) {
            let mut whole = data.clone();
            scalar(&mut whole, key, 0);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut out = BytesMut::new();
            for w in cuts.windows(2) {
                extend_masked_at(&mut out, &data[w[0]..w[1]], key, w[0]);
            }
            prop_assert_eq!(&out[..], &whole[..]);
        }
    }

    /// Every small-frame length (each 16-byte chunk count, each tail), appended after bytes
    /// already there and into buffers with no room or more than needed; run under miri.
    #[test]
    fn extend_small_frame_writes_header_key_and_masked_payload() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..126usize {
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(29) ^ 0xa5)
                .collect();
            let mut want = vec![0x82, 0x80 | len as u8];
            want.extend_from_slice(&key);
            let mut masked = data.clone();
            scalar(&mut masked, key, 0);
            want.extend_from_slice(&masked);
            for (prefix, room) in [(0, 0), (3, 0), (0, 300), (17, 2)] {
                let mut out = BytesMut::with_capacity(prefix + room);
                out.extend_from_slice(&vec![0xee; prefix]);
                extend_small_frame(&mut out, [0x82, 0x80 | len as u8], key, &data);
                assert_eq!(out.len(), prefix + 6 + len);
                assert!(out[..prefix].iter().all(|b| *b == 0xee));
                assert_eq!(
                    &out[prefix..],
                    &want[..],
                    "len {len} prefix {prefix} room {room}"
                );
                extend_small_frame(&mut out, [0x82, 0x80 | len as u8], key, &data);
                assert_eq!(&out[prefix + 6 + len..], &want[..]);
            }
        }
    }

    /// Every length around the 64-byte blocks, appended to buffers that already hold bytes,
    /// have no room, or have more room than needed (the cases the spare-capacity write must
    /// get right; small enough to run under miri).
    #[test]
    fn extend_masked_fills_exactly_what_it_marks() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in [0, 1, 3, 63, 64, 65, 127, 128, 129, 200, 640, 1000] {
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(37) ^ 0x5a)
                .collect();
            let mut want = data.clone();
            scalar(&mut want, key, 0);
            for (prefix, room) in [(0, 0), (5, 0), (0, 4096), (70, 3)] {
                let mut out = BytesMut::with_capacity(prefix + room);
                out.extend_from_slice(&vec![0xee; prefix]);
                extend_masked(&mut out, &data, key);
                assert_eq!(out.len(), prefix + len);
                assert!(out[..prefix].iter().all(|b| *b == 0xee));
                assert_eq!(
                    &out[prefix..],
                    &want[..],
                    "len {len} prefix {prefix} room {room}"
                );
                // Appending again continues after what was marked written.
                extend_masked(&mut out, &data, key);
                assert_eq!(&out[prefix + len..], &want[..]);
            }
        }
    }
}
