//! Incremental UTF-8 validation across fragment boundaries.
//!
//! A text message must fail at the first fragment that cannot be the start of valid UTF-8
//! (Autobahn 6.4.*), not at its end, so the validator keeps the up to three bytes of an
//! unfinished character between calls and rejects a prefix as soon as no continuation could
//! make it valid. The bulk work is simdutf8.

use simdutf8::compat::from_utf8;

/// Validates a UTF-8 byte stream fed in pieces.
///
/// ```
/// let mut v = wsc_proto::Utf8Validator::default();
/// let euro = "€".as_bytes();
/// assert!(v.feed(&euro[..1]).is_ok()); // unfinished character: wait for more
/// assert!(v.feed(&euro[1..]).is_ok());
/// assert!(v.finish().is_ok());
/// assert!(v.feed(&[0xce, 0xba, 0xf4, 0x90]).is_err()); // 0xf4 0x90 can never become valid
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes fed so far are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Validates the next piece; `Err` as soon as the stream can no longer be valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = char_len(self.pending[0]) - have;
            let take = need.min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            match std::str::from_utf8(&self.pending[..now]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    self.pending_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
            input = &input[take..];
        }
        match from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream: `Err` if it stops inside a character. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let ok = self.pending_len == 0;
        self.pending_len = 0;
        if ok { Ok(()) } else { Err(InvalidUtf8) }
    }

    /// Forgets any unfinished character.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

fn char_len(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(bytes: &[u8]) -> Vec<bool> {
        // Result of validating `bytes` split at every single position, fed byte by byte too.
        let mut out = Vec::new();
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::default();
            let ok = v.feed(&bytes[..cut]).is_ok()
                && v.feed(&bytes[cut..]).is_ok()
                && v.finish().is_ok();
            out.push(ok);
        }
        let mut v = Utf8Validator::default();
        out.push(
            bytes
                .iter()
                .all(|b| v.feed(std::slice::from_ref(b)).is_ok())
                && v.finish().is_ok(),
        );
        out
    }

    proptest! {
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let expect = std::str::from_utf8(&bytes).is_ok();
            for ok in split_all(&bytes) {
                prop_assert_eq!(ok, expect);
            }
        }

        #[test]
        fn valid_strings_pass_any_split(s in "\\PC{0,30}") {
            for ok in split_all(s.as_bytes()) {
                prop_assert!(ok);
            }
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        // Autobahn 6.4.1: κόσμε then 0xf4 0x90 0x80 0x80 (above U+10FFFF): fail at 0xf4 0x90.
        let mut v = Utf8Validator::default();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert!(v.feed(&[0xf4]).is_ok());
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn unfinished_at_end_fails() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(&[0xe2, 0x82]).is_ok());
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert!(v.finish().is_ok());
    }
}
