//! Masking (RFC 6455 §5.3): the one hot loop of the send path (and of the server role's
//! receive path).
//!
//! The key is rotated for an `offset` so that a payload can be masked in pieces.
//! [`extend_masked`] copies and masks in one pass for the send path, and `extend_small_frame`
//! builds a whole small frame, both writing into the buffer's spare capacity.
//!
//! Each [`MaskKernel`] is the same XOR loop at another width: sixteen bytes at a time in portable
//! code (the compiler emits SSE2 on x86-64 and NEON on aarch64, both baseline), thirty-two with
//! AVX2 where the CPU has it, chosen at run time; [`MaskKernel::Scalar`] is the byte-at-a-time
//! reference. This module is the crate's only `unsafe`: spare-capacity writes, and calls into
//! the AVX2 kernel once the CPU is known to have AVX2. Under miri only the portable kernels
//! run unless the build enables AVX2 (`-C target-feature=+avx2`): miri has no CPU to ask.

use bytes::BytesMut;

/// Payloads shorter than this are masked by the portable kernel without asking which kernel
/// is best: the call would cost more than the wider XOR saves.
const DISPATCH_FROM: usize = 128;

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
    if buf.len() >= DISPATCH_FROM && MaskKernel::best() == MaskKernel::Avx2 {
        avx2::apply(buf, key);
    } else {
        xor_in_place::<16>(buf, key);
    }
}

/// One way to mask, for comparing them (the bench's `mask` row); [`apply_mask`] and
/// [`extend_masked`] use the fastest this CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaskKernel {
    /// One byte at a time: the reference the others are tested against.
    Scalar,
    /// Sixteen bytes at a time in portable code: SSE2 on x86-64, NEON on aarch64.
    Portable,
    /// Thirty-two bytes at a time with AVX2 (x86-64 CPUs that have it).
    Avx2,
}

impl MaskKernel {
    /// The kernels this CPU can run, slowest first.
    pub fn available() -> Vec<MaskKernel> {
        let mut v = vec![MaskKernel::Scalar, MaskKernel::Portable];
        if avx2::detected() {
            v.push(MaskKernel::Avx2);
        }
        v
    }

    /// The fastest kernel this CPU can run.
    #[inline]
    pub fn best() -> MaskKernel {
        if avx2::detected() {
            MaskKernel::Avx2
        } else {
            MaskKernel::Portable
        }
    }

    /// A short name for reports: `scalar`, `sse2`/`neon`/`portable`, `avx2`.
    pub fn name(self) -> &'static str {
        match self {
            MaskKernel::Scalar => "scalar",
            MaskKernel::Portable if cfg!(target_arch = "x86_64") => "sse2",
            MaskKernel::Portable if cfg!(target_arch = "aarch64") => "neon",
            MaskKernel::Portable => "portable",
            MaskKernel::Avx2 => "avx2",
        }
    }

    /// [`apply_mask`] with this kernel; a kernel this CPU cannot run (not among
    /// [`MaskKernel::available`]) masks with the portable one instead.
    ///
    /// ```
    /// use wsc_proto::MaskKernel;
    /// for k in MaskKernel::available() {
    ///     let mut data = *b"Hello";
    ///     k.apply(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
    ///     assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 §5.7
    /// }
    /// ```
    pub fn apply(self, buf: &mut [u8], key: [u8; 4], offset: usize) {
        let key = rotate(key, offset);
        match self {
            MaskKernel::Scalar => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b ^= key[i & 3];
                }
            }
            MaskKernel::Avx2 if avx2::detected() => avx2::apply(buf, key),
            _ => xor_in_place::<16>(buf, key),
        }
    }
}

/// XORs `buf` with `key` (at offset 0), `N` bytes at a time, then 16, then one.
#[inline(always)]
fn xor_in_place<const N: usize>(buf: &mut [u8], key: [u8; 4]) {
    let kn = key_n::<N>(key);
    let (chunks, rest) = buf.as_chunks_mut::<N>();
    for c in chunks {
        *c = xor(c, &kn);
    }
    // N is a multiple of 4: the rest starts at key offset 0.
    let k16 = key_n::<16>(key);
    let (chunks, rest) = rest.as_chunks_mut::<16>();
    for c in chunks {
        *c = xor(c, &k16);
    }
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The AVX2 kernel: the portable loop compiled for AVX2, entered only once the CPU is known
/// to have it.
mod avx2 {
    /// Whether this CPU has AVX2 (std caches the answer). Under miri: whether the build
    /// enables it, as miri has no CPU to ask.
    #[inline(always)]
    pub(super) fn detected() -> bool {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(all(target_arch = "x86_64", miri))]
        {
            cfg!(target_feature = "avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// XORs `buf` with `key` (at offset 0); the portable kernel where AVX2 is missing.
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn apply(buf: &mut [u8], key: [u8; 4]) {
        #[cfg(target_arch = "x86_64")]
        if detected() {
            // SAFETY: `apply_avx2` needs only the AVX2 target feature, which `detected` has
            // just found on this CPU (or, under miri, in the build).
            return unsafe { apply_avx2(buf, key) };
        }
        super::xor_in_place::<16>(buf, key);
    }

    /// Masks `blocks` into the first `blocks.len() * 64` bytes of `dst`; the portable kernel
    /// where AVX2 is missing.
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn mask_blocks(
        dst: &mut [[std::mem::MaybeUninit<u8>; 64]],
        blocks: &[[u8; 64]],
        key: [u8; 4],
    ) {
        #[cfg(target_arch = "x86_64")]
        if detected() {
            // SAFETY: `mask_blocks_avx2` needs only the AVX2 target feature, which
            // `detected` has just found on this CPU (or, under miri, in the build).
            return unsafe { mask_blocks_avx2(dst, blocks, key) };
        }
        super::mask_blocks::<16>(dst, blocks, key);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_avx2(buf: &mut [u8], key: [u8; 4]) {
        super::xor_in_place::<32>(buf, key);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn mask_blocks_avx2(
        dst: &mut [[std::mem::MaybeUninit<u8>; 64]],
        blocks: &[[u8; 64]],
        key: [u8; 4],
    ) {
        super::mask_blocks::<32>(dst, blocks, key);
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
        let avx2 = blocks.len() * 64 >= DISPATCH_FROM && MaskKernel::best() == MaskKernel::Avx2;
        extend_masked_blocks(out, blocks, key, avx2);
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

/// Masks `blocks` into spare capacity, with the AVX2 kernel if `avx2` (and the CPU has it),
/// and marks the bytes initialized.
#[inline(never)]
#[allow(unsafe_code)]
fn extend_masked_blocks(out: &mut BytesMut, blocks: &[[u8; 64]], key: [u8; 4], avx2: bool) {
    let n = blocks.len() * 64;
    // Panics unless the caller reserved room for `n` more bytes.
    let (dst, _) = out.spare_capacity_mut()[..n].as_chunks_mut::<64>();
    if avx2 {
        avx2::mask_blocks(dst, blocks, key);
    } else {
        mask_blocks::<16>(dst, blocks, key);
    }
    let len = out.len() + n;
    // SAFETY: `dst` is the first `n` bytes of the spare capacity, cut into `n / 64` chunks
    // of 64 (none left over); either kernel writes every byte of the first `blocks.len()`
    // of them, that is of all of them, so the bytes up to `len` are initialized.
    unsafe { out.set_len(len) };
}

/// Writes each of `blocks` masked with `key` into the block of `dst` at the same index (all
/// 64 bytes of it), `N` bytes at a time; `N` divides 64.
#[inline(always)]
fn mask_blocks<const N: usize>(
    dst: &mut [[std::mem::MaybeUninit<u8>; 64]],
    blocks: &[[u8; 64]],
    key: [u8; 4],
) {
    let kn = key_n::<N>(key);
    for (d, s) in dst.iter_mut().zip(blocks) {
        // Sixty-four bytes per step: several SIMD XORs between one loop test.
        let (d, s) = (d.as_chunks_mut::<N>().0, s.as_chunks::<N>().0);
        for (d, s) in d.iter_mut().zip(s) {
            *d = xor(s, &kn).map(std::mem::MaybeUninit::new);
        }
    }
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
    let k16 = key_n::<16>(key);
    let (dc, dt) = body.as_chunks_mut::<16>();
    let (sc, st) = payload.as_chunks::<16>();
    for (d, s) in dc.iter_mut().zip(sc) {
        *d = xor(s, &k16).map(std::mem::MaybeUninit::new);
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

/// The key repeated over `N` bytes (`N` a multiple of 4).
#[inline(always)]
fn key_n<const N: usize>(key: [u8; 4]) -> [u8; N] {
    std::array::from_fn(|i| key[i & 3])
}

/// `N` bytes at a time: the compiler turns this into SIMD XORs of the width the function it
/// is inlined into may use (SSE2 is baseline on x86-64, NEON on aarch64), without `unsafe`.
#[inline(always)]
fn xor<const N: usize>(a: &[u8; N], k: &[u8; N]) -> [u8; N] {
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

    proptest! {
        /// Every kernel this CPU has, against the reference, for every length, start
        /// alignment and key offset.
        #[test]
        fn every_kernel_matches_scalar(data in proptest::collection::vec(any::<u8>(), 0..700), key: [u8; 4], align in 0usize..64, offset in 0usize..8) {
            let mut want = vec![0u8; align];
            want.extend_from_slice(&data);
            let base = want.clone();
            scalar(&mut want[align..], rotate(key, offset), 0);
            for k in MaskKernel::available() {
                let mut got = base.clone();
                k.apply(&mut got[align..], key, offset);
                prop_assert_eq!(&got, &want, "{:?}", k);
            }
            let mut got = base.clone();
            apply_mask(&mut got[align..], key, offset);
            prop_assert_eq!(&got, &want);
            let mut out = BytesMut::from(&base[..align]);
            extend_masked_at(&mut out, &data, key, offset);
            prop_assert_eq!(&out[..], &want[..]);
        }
    }

    /// Each kernel, at every length around its chunk widths and at every start alignment
    /// within a 64-byte block (small enough to run under miri); the spare-capacity writes of
    /// both block kernels too.
    #[test]
    fn kernels_agree_at_every_boundary() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..400usize)
            .map(|i| (i as u8).wrapping_mul(41) ^ 0x3c)
            .collect();
        // Under miri, each chunk width's edges only (miri runs a thousand times slower).
        let lens: Vec<usize> = if cfg!(miri) {
            vec![
                0, 1, 3, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 193,
            ]
        } else {
            (0..140)
                .chain([191, 192, 193, 255, 256, 257, 320])
                .collect()
        };
        for len in lens {
            for align in 0..if cfg!(miri) { 4 } else { 8 } {
                let src = &data[align..align + len];
                for offset in 0..4 {
                    let mut want = src.to_vec();
                    scalar(&mut want, key, offset);
                    for k in MaskKernel::available() {
                        let mut got = src.to_vec();
                        k.apply(&mut got, key, offset);
                        assert_eq!(got, want, "{k:?} len {len} align {align} offset {offset}");
                    }
                }
            }
        }
        let (blocks, _) = data.as_chunks::<64>();
        let mut want = data[..blocks.len() * 64].to_vec();
        scalar(&mut want, key, 0);
        for avx2 in [false, MaskKernel::best() == MaskKernel::Avx2] {
            for (prefix, room) in [(0, 0), (5, 0), (0, 4096), (70, 3)] {
                let mut out = BytesMut::with_capacity(prefix + room);
                out.extend_from_slice(&vec![0xee; prefix]);
                out.reserve(want.len());
                extend_masked_blocks(&mut out, blocks, key, avx2);
                assert!(out[..prefix].iter().all(|b| *b == 0xee));
                assert_eq!(&out[prefix..], &want[..], "avx2 {avx2} prefix {prefix}");
            }
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
