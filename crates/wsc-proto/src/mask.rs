//! Masking (RFC 6455 §5.3): the one hot loop of the send path.
//!
//! Sixteen bytes at a time in safe Rust (the compiler emits SIMD XORs); the key is rotated for
//! an `offset` so that a payload can be masked in pieces. [`extend_masked`] copies and masks
//! in one pass for the send path.

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

/// Bytes masked on the stack before being appended: small enough to stay in L1 and under
/// the size where `memcpy` switches to `rep movsb`.
const BLOCK: usize = 2048;

/// Appends `src` masked with `key` to `out`: one pass over `src`, and the destination is
/// written once (copying and then masking in place would go over it twice).
///
/// ```
/// let mut out = bytes::BytesMut::new();
/// wsc_proto::mask::extend_masked(&mut out, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(&out[..], [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 §5.7
/// ```
pub fn extend_masked(out: &mut BytesMut, src: &[u8], key: [u8; 4]) {
    out.reserve(src.len());
    let (blocks, rest) = src.as_chunks::<BLOCK>();
    if !blocks.is_empty() {
        extend_masked_blocks(out, blocks, key);
    }
    // BLOCK is a multiple of 4: the rest starts at key offset 0.
    let start = out.len();
    out.extend_from_slice(rest);
    apply_mask(&mut out[start..], key, 0);
}

#[inline(never)]
fn extend_masked_blocks(out: &mut BytesMut, blocks: &[[u8; BLOCK]], key: [u8; 4]) {
    let k16 = key16(key);
    let mut block = [0u8; BLOCK];
    for b in blocks {
        // Sixty-four bytes per step: four SIMD XORs between one loop test.
        for (d, s) in block
            .as_chunks_mut::<64>()
            .0
            .iter_mut()
            .zip(b.as_chunks::<64>().0)
        {
            let (d, s) = (d.as_chunks_mut::<16>().0, s.as_chunks::<16>().0);
            for i in 0..4 {
                d[i] = xor16(&s[i], &k16);
            }
        }
        out.extend_from_slice(&block);
    }
}

/// Writes `src` masked with `key` (from offset 0) into `dst`, which has the same length:
/// sixteen bytes per XOR, no intermediate copy.
#[inline(always)]
pub(crate) fn mask_into(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    let k16 = key16(key);
    let (dc, dt) = dst.as_chunks_mut::<16>();
    let (sc, st) = src.as_chunks::<16>();
    for (d, s) in dc.iter_mut().zip(sc) {
        *d = xor16(s, &k16);
    }
    for (i, (d, s)) in dt.iter_mut().zip(st).enumerate() {
        *d = s ^ key[i & 3];
    }
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
    }
}
