//! Masking (RFC 6455 §5.3): the one hot loop of the send path.
//!
//! Word-at-a-time XOR in safe Rust; the compiler vectorises the 8-byte loop. The key is
//! rotated for an `offset` so that a payload can be masked in pieces.

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
    let k32 = u32::from_ne_bytes(key);
    let k64 = (u64::from(k32) << 32) | u64::from(k32);
    let (chunks, rest) = buf.as_chunks_mut::<8>();
    for c in chunks {
        *c = (u64::from_ne_bytes(*c) ^ k64).to_ne_bytes();
    }
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
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
            prop_assert_eq!(a, b);
        }
    }
}
