//! The extension mechanism (RFC 6455 §9), the analog of Ktor's `WebSocketExtension` and its
//! factory.
//!
//! A factory offers `Sec-WebSocket-Extensions` parameters and, if the server answers, checks
//! the answer and builds the per-connection [`Extension`], which claims RSV bits and
//! transforms whole outgoing messages and incoming message payloads fragment by fragment.

use std::fmt;

use crate::frame::OpCode;

/// One `name[=value]` parameter of an extension in a `Sec-WebSocket-Extensions` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    /// The parameter name (case kept as sent).
    pub name: String,
    /// The value, unquoted, if any.
    pub value: Option<String>,
}

/// One extension item of a `Sec-WebSocket-Extensions` header: its token and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionItem {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Its parameters in order.
    pub params: Vec<ExtensionParam>,
}

/// Parses a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1): comma-separated items, each a
/// token followed by `; name[=value]` parameters, values tokens or quoted strings.
///
/// ```
/// let items = wsc_proto::parse_extensions("permessage-deflate; client_max_window_bits=10; server_no_context_takeover").unwrap();
/// assert_eq!(items[0].name, "permessage-deflate");
/// assert_eq!(items[0].params[0].value.as_deref(), Some("10"));
/// assert!(wsc_proto::parse_extensions("a; =b").is_err());
/// ```
pub fn parse_extensions(value: &str) -> Result<Vec<ExtensionItem>, String> {
    let mut items = Vec::new();
    for item in split_outside_quotes(value, ',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut parts = split_outside_quotes(item, ';').into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !is_token(name) {
            return Err(format!("malformed extension name {name:?}"));
        }
        let mut params = Vec::new();
        for p in parts {
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p.trim(), None),
            };
            if !is_token(n) {
                return Err(format!("malformed parameter {p:?} of {name}"));
            }
            let value = match v {
                None => None,
                Some(v) if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                    let inner = v[1..v.len() - 1].replace('\\', "");
                    if !is_token(&inner) {
                        return Err(format!("malformed value of {n} in {name}"));
                    }
                    Some(inner)
                }
                Some(v) if is_token(v) => Some(v.to_owned()),
                Some(v) => return Err(format!("malformed value {v:?} of {n} in {name}")),
            };
            params.push(ExtensionParam {
                name: n.to_owned(),
                value,
            });
        }
        items.push(ExtensionItem {
            name: name.to_owned(),
            params,
        });
    }
    Ok(items)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An incoming message payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded payload passed the limit (close with 1009).
    TooBig {
        /// Bytes produced when the limit was passed.
        size: u64,
    },
    /// The payload is corrupt for this extension (close with 1002... or 1007 as it judges).
    Corrupt(String),
}

/// A negotiated, per-connection extension. Implement it (with an [`ExtensionFactory`]) to add
/// your own; permessage-deflate is built in ([`crate::deflate`]).
pub trait Extension: Send + fmt::Debug {
    /// The extension token, e.g. `permessage-deflate`.
    fn name(&self) -> &'static str;
    /// The RSV bits it uses (`0x40` RSV1, `0x20` RSV2, `0x10` RSV3).
    fn rsv(&self) -> u8;
    /// The parameters the server answered with, as a header item (for display).
    fn describe(&self) -> String;
    /// Transforms an outgoing data message. `Ok(Some(bytes))` sends `bytes` with this
    /// extension's RSV bits on the first frame; `Ok(None)` sends the payload unchanged.
    fn encode(&mut self, opcode: OpCode, payload: &[u8]) -> Result<Option<&[u8]>, String>;
    /// Decodes one fragment of an incoming message that had this extension's RSV bits on its
    /// first frame, appending to `out`; `fin` marks the message's last fragment. Must fail with
    /// [`DecodeError::TooBig`] as soon as `out` would pass `limit` bytes, without allocating
    /// much past it.
    fn decode(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), DecodeError>;
}

/// Offers an extension in the handshake and builds it from the server's answer (Ktor's
/// `WebSocketExtensionFactory`).
pub trait ExtensionFactory: Send + Sync + fmt::Debug {
    /// The extension token this factory answers to.
    fn name(&self) -> &'static str;
    /// The RSV bits the extension will claim.
    fn rsv(&self) -> u8;
    /// The offer, as one or more comma-separated header items.
    fn offer(&self) -> String;
    /// Checks the server's accepted parameters and builds the extension, or says why the
    /// answer is unacceptable (the handshake then fails).
    fn accept(&self, params: &[ExtensionParam]) -> Result<Box<dyn Extension>, String>;
}

/// Runs an outgoing message through the negotiated extensions in order: the RSV bits to set on
/// its first frame and the bytes to frame (the last extension's output, borrowed from it, in
/// the common case of one). An extension that declines (`Ok(None)`) leaves the payload as it
/// was; an error names the extension that failed.
pub fn encode_message<'a>(
    chain: &'a mut [Box<dyn Extension>],
    opcode: OpCode,
    payload: &'a [u8],
) -> Result<(u8, std::borrow::Cow<'a, [u8]>), String> {
    let mut rsv = 0u8;
    let mut owned: Option<Vec<u8>> = None;
    let last = chain.len().saturating_sub(1);
    for (i, e) in chain.iter_mut().enumerate() {
        let input = owned.as_deref().unwrap_or(payload);
        let (bits, name) = (e.rsv(), e.name());
        let encoded = e
            .encode(opcode, input)
            .map_err(|err| format!("extension {name} failed to encode: {err}"))?;
        match encoded {
            Some(out) if i == last => return Ok((rsv | bits, std::borrow::Cow::Borrowed(out))),
            Some(out) => {
                owned = Some(out.to_vec());
                rsv |= bits;
            }
            None => {}
        }
    }
    Ok(match owned {
        Some(v) => (rsv, std::borrow::Cow::Owned(v)),
        None => (rsv, std::borrow::Cow::Borrowed(payload)),
    })
}

/// Checks a response's `Sec-WebSocket-Extensions` items against the offered factories and
/// builds the accepted extensions in the server's order.
///
/// Fails if the server names an extension that was not offered, names one twice, answers with
/// parameters the factory refuses, or if two accepted extensions claim the same RSV bit.
pub fn negotiate(
    factories: &[std::sync::Arc<dyn ExtensionFactory>],
    response: &[ExtensionItem],
) -> Result<Vec<Box<dyn Extension>>, String> {
    let mut out: Vec<Box<dyn Extension>> = Vec::new();
    let mut used_rsv = 0u8;
    for item in response {
        let Some(f) = factories
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(&item.name))
        else {
            return Err(format!(
                "server accepted extension {:?}, which was not offered",
                item.name
            ));
        };
        if out.iter().any(|e| e.name() == f.name()) {
            return Err(format!("server accepted extension {:?} twice", item.name));
        }
        let ext = f
            .accept(&item.params)
            .map_err(|e| format!("{}: {e}", item.name))?;
        if ext.rsv() & used_rsv != 0 {
            return Err(format!(
                "extension {:?} claims an RSV bit another extension already uses",
                item.name
            ));
        }
        used_rsv |= ext.rsv();
        out.push(ext);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_and_multiple() {
        let v = parse_extensions("foo; a=\"1\", bar ;b; c = 2").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].params[0],
            ExtensionParam {
                name: "a".into(),
                value: Some("1".into())
            }
        );
        assert_eq!(
            v[1].params[1],
            ExtensionParam {
                name: "c".into(),
                value: Some("2".into())
            }
        );
        assert!(parse_extensions("foo; a=b c").is_err());
        assert!(parse_extensions("f o").is_err());
    }
}
