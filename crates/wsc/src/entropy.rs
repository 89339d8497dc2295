//! The OS-seeded CSPRNG behind mask keys and handshake keys (RFC 6455 §10.3).

use rand::{RngCore, SeedableRng, rngs::StdRng};

/// A ChaCha12 generator seeded from the operating system; one per session.
pub(crate) struct OsEntropy(StdRng);

impl OsEntropy {
    pub(crate) fn new() -> Self {
        OsEntropy(StdRng::from_os_rng())
    }
}

impl wsc_proto::Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
}
