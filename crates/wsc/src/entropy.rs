//! The OS-seeded CSPRNG behind mask keys and handshake keys (RFC 6455 §10.3).

use rand::{RngCore, SeedableRng, rngs::StdRng};

/// A ChaCha12 generator seeded from the operating system; one per session.
pub(crate) struct OsEntropy(StdRng);

impl OsEntropy {
    pub(crate) fn new() -> Self {
        OsEntropy(StdRng::from_os_rng())
    }
}

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy::new()
    }
}

impl wsc_proto::Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        // Mask keys are drawn 256 bytes at a time; taking the generator's output a word at a
        // time costs a third of what its byte-copying `fill_bytes` does.
        let (words, rest) = dest.as_chunks_mut::<4>();
        for w in words {
            *w = self.0.next_u32().to_ne_bytes();
        }
        self.0.fill_bytes(rest);
    }
}
