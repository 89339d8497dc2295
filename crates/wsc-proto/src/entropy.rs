//! Randomness comes in from outside: the core holds no generator of its own.

/// A source of cryptographically secure random bytes (RFC 6455 §5.3, §10.3 require mask keys
/// an attacker cannot predict). The `wsc` crate supplies an OS-seeded CSPRNG; tests may script it.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> Entropy for F {
    fn fill(&mut self, dest: &mut [u8]) {
        self(dest)
    }
}

/// Mask keys drawn from an [`Entropy`] source in blocks of 64, so that the generator's cost
/// is paid once per 64 frames rather than per frame.
///
/// ```
/// let mut n = 0u8;
/// let mut keys = wsc_proto::MaskKeys::new(move |b: &mut [u8]| for x in b { n = n.wrapping_add(1); *x = n; });
/// assert_eq!(keys.next_key(), [1, 2, 3, 4]);
/// assert_eq!(keys.next_key(), [5, 6, 7, 8]);
/// ```
pub struct MaskKeys<E> {
    source: E,
    block: [u8; 256],
    pos: usize,
}

impl<E: Entropy> MaskKeys<E> {
    /// Keys from `source`.
    pub fn new(source: E) -> Self {
        MaskKeys {
            source,
            block: [0; 256],
            pos: 256,
        }
    }

    /// The next key.
    #[inline]
    pub fn next_key(&mut self) -> [u8; 4] {
        if self.pos >= self.block.len() {
            self.refill();
        }
        let k = match self.block.get(self.pos..self.pos + 4) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => [0; 4], // unreachable: `pos` is a multiple of 4 below 256
        };
        self.pos += 4;
        k
    }

    #[cold]
    #[inline(never)]
    fn refill(&mut self) {
        self.source.fill(&mut self.block);
        self.pos = 0;
    }

    /// The underlying source, e.g. for handshake keys.
    pub fn source(&mut self) -> &mut E {
        &mut self.source
    }
}

impl<E> std::fmt::Debug for MaskKeys<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKeys")
    }
}
