//! permessage-deflate (RFC 7692): configuration, negotiation and a bounded codec.
//!
//! The deflate and inflate states are made on a direction's first compressed message. Where a
//! context is carried from message to message (context takeover) a state lives as long as the
//! connection; where the negotiated parameters say each message starts afresh in a direction
//! (`client_no_context_takeover` for ours, `server_no_context_takeover` for the peer's), the
//! state is dropped after each message, so an idle session holds none. Inflation is bounded:
//! it stops and reports [`DecodeError::TooBig`] as soon as the output would pass the message
//! limit, so a small compressed bomb never allocates more than the limit.
//!
//! Window bits: the inflater runs with a 32 KiB window, which reads any stream a peer may
//! produce with a smaller one (zlib-rs allocates a 32 KiB window whatever it is told, so a
//! smaller one would save nothing). The deflater uses its own side's negotiated window
//! (`client_max_window_bits` for a client, `server_max_window_bits` for a server); zlib cannot
//! deflate with an 8-bit window, so a side told to use one sends its messages uncompressed
//! (RSV1 clear), which RFC 7692 always allows (§6: compression is per message, never required)
//! and which keeps within the window the peer asked for.
//!
//! Both roles: a client offers with [`DeflateConfig::offer`] and checks the answer with
//! [`DeflateConfig::negotiate`]; a server picks the first acceptable offer with
//! [`DeflateConfig::accept_offers`] and answers with [`Accepted::response`]. The codec
//! ([`Deflate::new`], [`Deflate::new_server`]) then deflates within its own side's window and
//! context rule and inflates under the peer's. A server asked for an 8-bit window sends
//! uncompressed, as a client does.

use std::fmt;
use std::sync::Arc;

use flate2::{Decompress, FlushDecompress, Status};

use crate::decode::Role;
use crate::extension::{DecodeError, Extension, ExtensionFactory, ExtensionItem, ExtensionParam};
use crate::frame::{OpCode, RSV1};

/// The extension token.
pub const NAME: &str = "permessage-deflate";
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

type Predicate = Arc<dyn Fn(OpCode, &[u8]) -> bool + Send + Sync>;

/// permessage-deflate settings, the analog of Ktor's `WebSocketDeflateExtension.Config`.
///
/// The same settings serve both roles: a client puts them in its offer, a server in its answer
/// to a client's offer (each setter says what it means for each).
///
/// ```
/// # use wsc_proto::deflate::DeflateConfig;
/// let cfg = DeflateConfig::default()
///     .compression_level(6)
///     .compress_if_bigger_than(256)
///     .client_max_window_bits(Some(12))
///     .server_no_context_takeover(true);
/// assert_eq!(cfg.offer(), "permessage-deflate; client_max_window_bits=12; server_no_context_takeover");
/// ```
#[derive(Clone)]
pub struct DeflateConfig {
    client_max_window_bits: Option<u8>,
    server_max_window_bits: Option<u8>,
    client_no_context_takeover: bool,
    server_no_context_takeover: bool,
    level: u32,
    mem_level: u8,
    threshold: usize,
    predicate: Option<Predicate>,
}

impl Default for DeflateConfig {
    /// Offers `client_max_window_bits` (so the server may pick our window), context takeover
    /// both ways, level 6 (zlib's default), memLevel 5, and compresses every message of at
    /// least 1 byte.
    fn default() -> Self {
        DeflateConfig {
            client_max_window_bits: None,
            server_max_window_bits: None,
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            level: 6,
            mem_level: 5,
            threshold: 0,
            predicate: None,
        }
    }
}

impl fmt::Debug for DeflateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeflateConfig")
            .field("offer", &self.offer())
            .field("level", &self.level)
            .field("mem_level", &self.mem_level)
            .field("threshold", &self.threshold)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl DeflateConfig {
    /// Client: `client_max_window_bits=N` (8–15) in the offer; `None` (default) offers the
    /// bare parameter, letting the server choose. Server: asks the client to deflate within
    /// 2^N bytes when its offer lets the server choose; `None` (default) takes the client's.
    pub fn client_max_window_bits(mut self, bits: Option<u8>) -> Self {
        self.client_max_window_bits = bits.map(|b| b.clamp(8, 15));
        self
    }
    /// Client: asks the server to use at most 2^N bytes of window (8–15). Server: deflates
    /// within at most 2^N bytes (less if the client asks) and says so. Default: not set.
    pub fn server_max_window_bits(mut self, bits: Option<u8>) -> Self {
        self.server_max_window_bits = bits.map(|b| b.clamp(8, 15));
        self
    }
    /// Client: promises (and offers) a fresh deflate context per outgoing message. Server:
    /// asks the client for that in every answer. Default off.
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }
    /// Client: asks the server for a fresh context per message. Server: deflates every
    /// message with a fresh context and says so in every answer. Default off.
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }
    /// zlib level 0–9 (default 6).
    pub fn compression_level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }
    /// zlib's memLevel 1–9 (default 5, as Python `websockets`): how much memory the deflater
    /// uses for the symbols it buffers, 2^(memLevel + 6) × 7 bytes (14 KiB at 5, 112 KiB at
    /// zlib's own default of 8), against ratio. On JSON-like text and on random data 5
    /// compresses as well as 8; below 4 the ratio drops. The window and hash table do not
    /// change with it.
    pub fn mem_level(mut self, level: u8) -> Self {
        self.mem_level = level.clamp(1, 9);
        self
    }
    /// Compresses only messages longer than `bytes` (Ktor's `compressIfBiggerThan`). Default 0.
    pub fn compress_if_bigger_than(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }
    /// Compresses only messages for which `f` returns true (Ktor's `compressIf`); combined
    /// with the size threshold by AND, as in Ktor.
    pub fn compress_if(
        mut self,
        f: impl Fn(OpCode, &[u8]) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(f));
        self
    }

    /// The `Sec-WebSocket-Extensions` offer this configuration sends.
    pub fn offer(&self) -> String {
        let mut s = String::from(NAME);
        match self.client_max_window_bits {
            Some(b) => s.push_str(&format!("; client_max_window_bits={b}")),
            None => s.push_str("; client_max_window_bits"),
        }
        if let Some(b) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={b}"));
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        s
    }

    /// What a server's answer means for this offer (RFC 7692 §7.1), or why it is unacceptable.
    pub fn negotiate(&self, params: &[ExtensionParam]) -> Result<Negotiated, String> {
        let mut n = Negotiated {
            client_max_window_bits: self.client_max_window_bits.unwrap_or(15),
            server_max_window_bits: 15,
            client_no_context_takeover: self.client_no_context_takeover,
            server_no_context_takeover: false,
        };
        let mut seen: Vec<String> = Vec::new();
        for p in params {
            let name = p.name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(format!("parameter {name} given twice"));
            }
            let bits = |v: &Option<String>| -> Result<u8, String> {
                let v = v
                    .as_deref()
                    .ok_or_else(|| format!("{name} needs a value"))?;
                match v.parse::<u8>() {
                    Ok(b @ 8..=15) if v.len() <= 2 && !v.starts_with('0') => Ok(b),
                    _ => Err(format!("{name}={v} is not a window size of 8 to 15 bits")),
                }
            };
            match name.as_str() {
                "server_no_context_takeover" | "client_no_context_takeover"
                    if p.value.is_some() =>
                {
                    return Err(format!("{name} takes no value"));
                }
                "server_no_context_takeover" => n.server_no_context_takeover = true,
                "client_no_context_takeover" => n.client_no_context_takeover = true,
                "server_max_window_bits" => {
                    let b = bits(&p.value)?;
                    if let Some(asked) = self.server_max_window_bits
                        && b > asked
                    {
                        return Err(format!(
                            "server_max_window_bits={b} is above the {asked} offered"
                        ));
                    }
                    n.server_max_window_bits = b;
                }
                "client_max_window_bits" => {
                    let b = bits(&p.value)?;
                    if b > n.client_max_window_bits {
                        return Err(format!(
                            "client_max_window_bits={b} is above the {} offered",
                            n.client_max_window_bits
                        ));
                    }
                    n.client_max_window_bits = b;
                }
                other => return Err(format!("unknown parameter {other}")),
            }
            seen.push(name);
        }
        if self.server_no_context_takeover && !n.server_no_context_takeover {
            return Err("server_no_context_takeover was requested but not granted".into());
        }
        if let Some(asked) = self.server_max_window_bits
            && !params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("server_max_window_bits"))
        {
            return Err(format!(
                "server_max_window_bits={asked} was requested but not granted"
            ));
        }
        Ok(n)
    }
}

impl DeflateConfig {
    /// Server side (RFC 7692 §5, §7.1): accepts the first of a client's extension offers that
    /// is permessage-deflate with valid parameters, or `None` if there is none (the session
    /// then runs uncompressed). An offer is declined, and the next one tried, when it repeats
    /// a parameter, names an unknown one, or gives a value RFC 7692 does not allow.
    ///
    /// ```
    /// use wsc_proto::deflate::DeflateConfig;
    /// use wsc_proto::parse_extensions;
    /// let offers = parse_extensions(
    ///     "permessage-deflate; client_max_window_bits=7, permessage-deflate; server_max_window_bits=10",
    /// ).unwrap();
    /// let a = DeflateConfig::default().accept_offers(&offers).unwrap();
    /// assert_eq!(a.response(), "permessage-deflate; server_max_window_bits=10");
    /// assert_eq!(a.params().server_max_window_bits, 10);
    /// ```
    pub fn accept_offers(&self, offers: &[ExtensionItem]) -> Option<Accepted> {
        offers
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(NAME))
            .find_map(|o| self.accept_offer(&o.params).ok())
    }

    /// Server side: accepts one permessage-deflate offer, or says why it must be declined.
    pub fn accept_offer(&self, offer: &[ExtensionParam]) -> Result<Accepted, String> {
        let mut seen: Vec<String> = Vec::new();
        let (mut server_nct, mut client_nct) = (false, false);
        let mut server_bits: Option<u8> = None;
        // `Some(None)`: the client offered the bare parameter, so the server may choose.
        let mut client_bits: Option<Option<u8>> = None;
        for p in offer {
            let name = p.name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(format!("parameter {name} given twice"));
            }
            let bits = |v: &str| -> Result<u8, String> {
                match v.parse::<u8>() {
                    Ok(b @ 8..=15) if v.len() <= 2 && !v.starts_with('0') => Ok(b),
                    _ => Err(format!("{name}={v} is not a window size of 8 to 15 bits")),
                }
            };
            match (name.as_str(), p.value.as_deref()) {
                ("server_no_context_takeover" | "client_no_context_takeover", Some(_)) => {
                    return Err(format!("{name} takes no value"));
                }
                ("server_no_context_takeover", None) => server_nct = true,
                ("client_no_context_takeover", None) => client_nct = true,
                ("server_max_window_bits", None) => {
                    return Err(format!("{name} needs a value"));
                }
                ("server_max_window_bits", Some(v)) => server_bits = Some(bits(v)?),
                ("client_max_window_bits", v) => client_bits = Some(v.map(bits).transpose()?),
                (other, _) => return Err(format!("unknown parameter {other}")),
            }
            seen.push(name);
        }
        // Each side's window: the smaller of what the client allows and what we want.
        let server_max_window_bits = match (server_bits, self.server_max_window_bits) {
            (Some(asked), Some(ours)) => Some(asked.min(ours)),
            (asked, ours) => asked.or(ours),
        };
        let client_max_window_bits = match client_bits {
            None => None,
            Some(offered) => match (offered, self.client_max_window_bits) {
                (Some(n), Some(m)) => Some(n.min(m)),
                (n, m) => n.or(m),
            },
        };
        let params = Negotiated {
            client_max_window_bits: client_max_window_bits.unwrap_or(15),
            server_max_window_bits: server_max_window_bits.unwrap_or(15),
            client_no_context_takeover: client_nct || self.client_no_context_takeover,
            server_no_context_takeover: server_nct || self.server_no_context_takeover,
        };
        let mut response = String::from(NAME);
        if params.server_no_context_takeover {
            response.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            response.push_str("; client_no_context_takeover");
        }
        if let Some(b) = server_max_window_bits {
            response.push_str(&format!("; server_max_window_bits={b}"));
        }
        if let Some(b) = client_max_window_bits {
            response.push_str(&format!("; client_max_window_bits={b}"));
        }
        Ok(Accepted { params, response })
    }
}

/// A server's acceptance of a client's permessage-deflate offer: the parameters in force and
/// the `Sec-WebSocket-Extensions` item that tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    params: Negotiated,
    response: String,
}

impl Accepted {
    /// The parameters in force.
    pub fn params(&self) -> Negotiated {
        self.params
    }
    /// The answer to put in the 101's `Sec-WebSocket-Extensions` header. It names only
    /// parameters the offer allows (`client_max_window_bits` only if the client offered it).
    pub fn response(&self) -> &str {
        &self.response
    }
}

/// The parameters in force after negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Window bits the client deflates with (at most).
    pub client_max_window_bits: u8,
    /// Window bits the server deflates with (at most).
    pub server_max_window_bits: u8,
    /// The client resets its deflate context after each message (so the server resets its
    /// inflater too).
    pub client_no_context_takeover: bool,
    /// The server resets its context after each message (so the client resets its inflater
    /// too).
    pub server_no_context_takeover: bool,
}

impl ExtensionFactory for DeflateConfig {
    fn name(&self) -> &'static str {
        NAME
    }
    fn rsv(&self) -> u8 {
        RSV1
    }
    fn offer(&self) -> String {
        DeflateConfig::offer(self)
    }
    fn accept(&self, params: &[ExtensionParam]) -> Result<Box<dyn Extension>, String> {
        let n = self.negotiate(params)?;
        Ok(Box::new(Deflate::new(self.clone(), n)))
    }
}

/// The per-connection permessage-deflate codec.
pub struct Deflate {
    config: DeflateConfig,
    params: Negotiated,
    /// Which side this codec is: it deflates under its own side's parameters and inflates
    /// under the peer's.
    role: Role,
    /// Made on first use (a session builds one instance per direction, and each uses one
    /// half); dropped after each message where no context is taken over in its direction.
    compress: Option<zlib_rs::Deflate>,
    decompress: Option<Decompress>,
    /// The peer ended the deflate stream (BFINAL) inside the current message.
    ended: bool,
    scratch: Vec<u8>,
}

impl fmt::Debug for Deflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .finish()
    }
}

impl Deflate {
    /// A client's codec with `params` in force.
    pub fn new(config: DeflateConfig, params: Negotiated) -> Self {
        Self::with_role(config, params, Role::Client)
    }

    /// A server's codec with `params` in force (from [`Accepted::params`]): it deflates
    /// within `server_max_window_bits` and under `server_no_context_takeover`, and inflates
    /// under `client_no_context_takeover`.
    pub fn new_server(config: DeflateConfig, params: Negotiated) -> Self {
        Self::with_role(config, params, Role::Server)
    }

    fn with_role(config: DeflateConfig, params: Negotiated, role: Role) -> Self {
        Deflate {
            config,
            params,
            role,
            compress: None,
            decompress: None,
            ended: false,
            scratch: Vec::new(),
        }
    }

    /// The negotiated parameters.
    pub fn params(&self) -> Negotiated {
        self.params
    }

    /// This side's deflate window bits and whether it resets its context after a message.
    fn own(&self) -> (u8, bool) {
        let p = &self.params;
        match self.role {
            Role::Client => (p.client_max_window_bits, p.client_no_context_takeover),
            Role::Server => (p.server_max_window_bits, p.server_no_context_takeover),
        }
    }

    /// Whether the peer resets its deflate context after each message.
    fn peer_resets(&self) -> bool {
        match self.role {
            Role::Client => self.params.server_no_context_takeover,
            Role::Server => self.params.client_no_context_takeover,
        }
    }

    fn wants(&self, opcode: OpCode, payload: &[u8]) -> bool {
        payload.len() > self.config.threshold
            && self
                .config
                .predicate
                .as_ref()
                .is_none_or(|p| p(opcode, payload))
    }
}

impl Extension for Deflate {
    fn name(&self) -> &'static str {
        NAME
    }
    fn rsv(&self) -> u8 {
        RSV1
    }
    fn describe(&self) -> String {
        let p = self.params;
        let mut s = format!(
            "{NAME}; client_max_window_bits={}; server_max_window_bits={}",
            p.client_max_window_bits, p.server_max_window_bits
        );
        if p.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if p.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        s
    }

    fn encode(&mut self, opcode: OpCode, payload: &[u8]) -> Result<Option<&[u8]>, String> {
        if !self.wants(opcode, payload) {
            return Ok(None);
        }
        let (bits, reset) = self.own();
        if bits < 9 {
            return Ok(None); // zlib cannot deflate within an 8-bit window: send uncompressed
        }
        let config = zlib_rs::DeflateConfig {
            level: self.config.level as i32,
            method: zlib_rs::Method::Deflated,
            // Negative: a raw deflate stream, no zlib header.
            window_bits: -i32::from(bits),
            mem_level: i32::from(self.config.mem_level),
            strategy: zlib_rs::Strategy::Default,
        };
        let c = self
            .compress
            .get_or_insert_with(|| zlib_rs::Deflate::new_with_config(config));
        let out = &mut self.scratch;
        out.clear();
        let start_in = c.total_in();
        loop {
            let consumed = (c.total_in() - start_in) as usize;
            let room = (payload.len() - consumed) / 2 + 64;
            let at = out.len();
            out.resize(at + room, 0);
            let before = c.total_out();
            let status = c.compress(
                &payload[consumed..],
                &mut out[at..],
                zlib_rs::DeflateFlush::SyncFlush,
            );
            let made = (c.total_out() - before) as usize;
            out.truncate(at + made);
            status.map_err(|e| format!("deflate failed: {e:?}"))?;
            // Done once all input is in and the flush did not fill the room it was given.
            if (c.total_in() - start_in) as usize == payload.len() && made < room {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - 4);
        }
        if out.is_empty() {
            // An empty message: a single empty stored block with BFINAL clear, as RFC 7692 §7.2.3.6 shows.
            out.push(0x00);
        }
        if reset {
            // Each message starts afresh: nothing worth keeping while idle.
            self.compress = None;
        }
        Ok(Some(out))
    }

    fn decode(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), DecodeError> {
        // After a block with BFINAL set the stream is over; RFC 7692 §7.2.3.4 shows a sender
        // that still appends bytes behind it, which a receiver ignores.
        let peer_resets = self.peer_resets();
        let d = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        if !self.ended {
            self.ended = inflate_into(d, input, out, limit)?;
        }
        if fin {
            if !std::mem::take(&mut self.ended) {
                inflate_into(d, &TAIL, out, limit)?;
            }
            if peer_resets {
                // The peer starts each message afresh: nothing worth keeping while idle.
                self.decompress = None;
            }
        }
        Ok(())
    }
}

/// Inflates `input` onto `out`, bounded by `limit`; `Ok(true)` if the deflate stream ended.
fn inflate_into(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, DecodeError> {
    loop {
        if out.len() == out.capacity() {
            let room = limit.saturating_add(1).saturating_sub(out.len());
            if room == 0 {
                return Err(DecodeError::TooBig {
                    size: out.len() as u64,
                });
            }
            out.reserve_exact(room.min(out.len().max(input.len() * 2).max(16 * 1024)));
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, FlushDecompress::None)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let used = (d.total_in() - in0) as usize;
        let made = d.total_out() - out0;
        input = &input[used..];
        if out.len() > limit {
            return Err(DecodeError::TooBig {
                size: out.len() as u64,
            });
        }
        if status == Status::StreamEnd {
            // The sender ended the deflate stream (BFINAL); the next message starts a new one.
            d.reset(false);
            return Ok(true);
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(false);
        }
        if used == 0 && made == 0 && out.len() < out.capacity() {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::parse_extensions;
    use flate2::{Compress, Compression, FlushCompress};

    fn params(s: &str) -> Vec<ExtensionParam> {
        parse_extensions(&format!("{NAME}{s}"))
            .unwrap()
            .remove(0)
            .params
    }

    fn codec(cfg: DeflateConfig, answer: &str) -> Deflate {
        let n = cfg.negotiate(&params(answer)).unwrap();
        Deflate::new(cfg, n)
    }

    fn inflate(d: &mut Deflate, frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            d.decode(f, i + 1 == frames.len(), &mut out, 1 << 20)
                .unwrap();
        }
        out
    }

    #[test]
    fn rfc7692_7_2_3_examples_inflate() {
        // §7.2.3.1: "Hello" compressed.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            inflate(&mut d, &[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]]),
            b"Hello"
        );
        // §7.2.3.1: the same split over two fragments.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            inflate(&mut d, &[&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]]),
            b"Hello"
        );
        // §7.2.3.2: two messages with context takeover; the second uses a back reference.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            inflate(&mut d, &[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]]),
            b"Hello"
        );
        assert_eq!(
            inflate(&mut d, &[&[0xf2, 0x00, 0x11, 0x00, 0x00]]),
            b"Hello"
        );
        // §7.2.3.3: a stored (uncompressed) block.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            inflate(
                &mut d,
                &[&[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00
                ]]
            ),
            b"Hello"
        );
        // §7.2.3.4: a block with BFINAL set.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            inflate(&mut d, &[&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]]),
            b"Hello"
        );
        // §7.2.3.5: two deflate blocks in one message.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            inflate(
                &mut d,
                &[&[
                    0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00
                ]]
            ),
            b"Hello"
        );
        // §7.2.3.6: an empty message.
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(inflate(&mut d, &[&[0x00]]), b"");
    }

    #[test]
    fn rfc7692_7_2_3_1_deflate_byte_for_byte() {
        let mut d = codec(DeflateConfig::default(), "");
        assert_eq!(
            d.encode(OpCode::Text, b"Hello").unwrap().unwrap(),
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        // §7.2.3.2: with context takeover the second "Hello" is a back reference.
        assert_eq!(
            d.encode(OpCode::Text, b"Hello").unwrap().unwrap(),
            &[0xf2, 0x00, 0x11, 0x00, 0x00]
        );
        // With client_no_context_takeover each message stands alone.
        let mut d = codec(DeflateConfig::default(), "; client_no_context_takeover");
        for _ in 0..2 {
            assert_eq!(
                d.encode(OpCode::Text, b"Hello").unwrap().unwrap(),
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            );
        }
    }

    #[test]
    fn round_trip_and_no_context_takeover() {
        let text = br#"{"id":1,"name":"wsc","tags":["a","b","c"],"ok":true}"#.repeat(200);
        for answer in [
            "",
            "; server_no_context_takeover; client_no_context_takeover",
            "; client_max_window_bits=9",
            "; server_max_window_bits=10",
        ] {
            let mut tx = codec(DeflateConfig::default(), answer);
            let mut rx = codec(DeflateConfig::default(), answer);
            for _ in 0..3 {
                let c = tx.encode(OpCode::Text, &text).unwrap().unwrap().to_vec();
                assert!(c.len() < text.len() / 5);
                let (a, b) = c.split_at(c.len() / 2);
                assert_eq!(inflate(&mut rx, &[a, b]), text);
            }
        }
    }

    #[test]
    fn negotiation_table() {
        let d = DeflateConfig::default();
        let ok = |cfg: &DeflateConfig, a: &str| cfg.negotiate(&params(a));
        assert_eq!(ok(&d, "").unwrap().client_max_window_bits, 15);
        assert_eq!(
            ok(&d, "; client_max_window_bits=9")
                .unwrap()
                .client_max_window_bits,
            9
        );
        assert_eq!(
            ok(&d, "; client_max_window_bits=8")
                .unwrap()
                .client_max_window_bits,
            8
        );
        assert_eq!(
            ok(&d, "; server_max_window_bits=8")
                .unwrap()
                .server_max_window_bits,
            8
        );
        assert!(
            ok(&d, "; server_no_context_takeover")
                .unwrap()
                .server_no_context_takeover
        );
        assert!(
            ok(&d, "; client_no_context_takeover")
                .unwrap()
                .client_no_context_takeover
        );
        for bad in [
            "; client_max_window_bits",
            "; client_max_window_bits=7",
            "; client_max_window_bits=16",
            "; client_max_window_bits=010",
            "; server_max_window_bits",
            "; server_no_context_takeover=1",
            "; server_no_context_takeover; server_no_context_takeover",
            "; foo",
        ] {
            assert!(ok(&d, bad).is_err(), "{bad}");
        }
        let asked = DeflateConfig::default()
            .client_max_window_bits(Some(10))
            .server_max_window_bits(Some(10))
            .server_no_context_takeover(true);
        assert!(
            ok(
                &asked,
                "; server_max_window_bits=10; server_no_context_takeover"
            )
            .is_ok()
        );
        assert!(
            ok(
                &asked,
                "; server_max_window_bits=11; server_no_context_takeover"
            )
            .is_err()
        );
        assert!(ok(&asked, "; server_max_window_bits=10").is_err());
        assert!(ok(&asked, "; server_no_context_takeover").is_err());
        assert!(
            ok(
                &asked,
                "; server_max_window_bits=9; server_no_context_takeover; client_max_window_bits=11"
            )
            .is_err()
        );
    }

    #[test]
    fn negotiation_matrix_every_offer_by_every_answer() {
        // Offers: (client_max_window_bits, server_max_window_bits, client_nct, server_nct).
        let offers = [
            (None, None, false, false),
            (Some(10), None, false, false),
            (None, Some(10), false, false),
            (None, None, true, false),
            (None, None, false, true),
            (Some(9), Some(12), true, true),
        ];
        let answers = [
            "",
            "; client_max_window_bits=9",
            "; client_max_window_bits=12",
            "; server_max_window_bits=10",
            "; server_max_window_bits=12",
            "; client_no_context_takeover",
            "; server_no_context_takeover",
            "; server_no_context_takeover; server_max_window_bits=9",
        ];
        for (cb, sb, cn, sn) in offers {
            let cfg = DeflateConfig::default()
                .client_max_window_bits(cb)
                .server_max_window_bits(sb)
                .client_no_context_takeover(cn)
                .server_no_context_takeover(sn);
            for a in answers {
                let got = cfg.negotiate(&params(a));
                let p = params(a);
                let val = |n: &str| {
                    p.iter()
                        .find(|x| x.name == n)
                        .and_then(|x| x.value.as_deref())
                        .map(|v| v.parse::<u8>().unwrap())
                };
                let has = |n: &str| p.iter().any(|x| x.name == n);
                // What RFC 7692 §7.1 allows, computed independently of `negotiate`.
                let client_ok = val("client_max_window_bits").is_none_or(|b| b <= cb.unwrap_or(15));
                let server_ok = match (sb, val("server_max_window_bits")) {
                    (Some(asked), Some(b)) => b <= asked,
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                let nct_ok = !sn || has("server_no_context_takeover");
                let expect_ok = client_ok && server_ok && nct_ok;
                assert_eq!(
                    got.is_ok(),
                    expect_ok,
                    "offer {:?} answer {a:?}: {got:?}",
                    cfg.offer()
                );
                if let Ok(n) = got {
                    assert_eq!(
                        n.client_max_window_bits,
                        val("client_max_window_bits").unwrap_or(cb.unwrap_or(15))
                    );
                    assert_eq!(
                        n.server_max_window_bits,
                        val("server_max_window_bits").unwrap_or(15)
                    );
                    assert_eq!(
                        n.client_no_context_takeover,
                        cn || has("client_no_context_takeover")
                    );
                    assert_eq!(
                        n.server_no_context_takeover,
                        has("server_no_context_takeover")
                    );
                    // And the codec that results round-trips a message.
                    let mut tx = Deflate::new(cfg.clone(), n);
                    let mut rx = Deflate::new(cfg.clone(), n);
                    let text = b"negotiated negotiated negotiated".repeat(50);
                    let c = tx.encode(OpCode::Text, &text).unwrap().unwrap().to_vec();
                    assert_eq!(inflate(&mut rx, &[&c]), text);
                }
            }
        }
    }

    fn offers(s: &str) -> Vec<ExtensionItem> {
        parse_extensions(s).unwrap()
    }

    #[test]
    fn server_answers_table() {
        let d = DeflateConfig::default();
        let answer = |cfg: &DeflateConfig, offer: &str| {
            cfg.accept_offers(&offers(offer))
                .map(|a| (a.response().to_owned(), a.params()))
        };
        let p = |cb, sb, cn, sn| Negotiated {
            client_max_window_bits: cb,
            server_max_window_bits: sb,
            client_no_context_takeover: cn,
            server_no_context_takeover: sn,
        };
        for (cfg, offer, response, params) in [
            (&d, NAME, NAME, p(15, 15, false, false)),
            (
                &d,
                "permessage-deflate; client_max_window_bits",
                NAME,
                p(15, 15, false, false),
            ),
            (
                &d,
                "permessage-deflate; client_max_window_bits=10",
                "permessage-deflate; client_max_window_bits=10",
                p(10, 15, false, false),
            ),
            (
                &d,
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=8",
                p(15, 8, false, false),
            ),
            (
                &d,
                "Permessage-Deflate; Server_No_Context_Takeover; client_no_context_takeover",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                p(15, 15, true, true),
            ),
            (
                &d,
                "permessage-deflate; server_max_window_bits=\"12\"",
                "permessage-deflate; server_max_window_bits=12",
                p(15, 12, false, false),
            ),
        ] {
            assert_eq!(
                answer(cfg, offer),
                Some((response.to_owned(), params)),
                "{offer}"
            );
        }
        // The server's own settings: a smaller window either way, a fresh context either way.
        let ours = DeflateConfig::default()
            .client_max_window_bits(Some(11))
            .server_max_window_bits(Some(10))
            .client_no_context_takeover(true)
            .server_no_context_takeover(true);
        assert_eq!(
            answer(&ours, "permessage-deflate; client_max_window_bits"),
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11".to_owned(),
                p(11, 10, true, true)
            ))
        );
        assert_eq!(
            answer(
                &ours,
                "permessage-deflate; client_max_window_bits=9; server_max_window_bits=12"
            )
            .unwrap()
            .1,
            p(9, 10, true, true)
        );
        assert_eq!(
            answer(&ours, "permessage-deflate; server_max_window_bits=9")
                .unwrap()
                .1,
            p(15, 9, true, true)
        );
        // A client that did not offer client_max_window_bits is not told a window.
        assert!(
            !answer(&ours, NAME)
                .unwrap()
                .0
                .contains("client_max_window_bits")
        );
    }

    #[test]
    fn server_declines_malformed_offers_and_takes_the_next() {
        let d = DeflateConfig::default();
        for bad in [
            "; server_max_window_bits",
            "; server_max_window_bits=7",
            "; server_max_window_bits=16",
            "; server_max_window_bits=010",
            "; server_max_window_bits=x",
            "; client_max_window_bits=7",
            "; client_max_window_bits=",
            "; client_max_window_bits=256",
            "; server_no_context_takeover=1",
            "; client_no_context_takeover=\"x\"",
            "; server_no_context_takeover; server_no_context_takeover",
            "; client_max_window_bits; Client_Max_Window_Bits=9",
            "; x-unknown",
        ] {
            let Ok(items) = parse_extensions(&format!("{NAME}{bad}")) else {
                continue; // refused by the header parser already
            };
            assert!(d.accept_offer(&items[0].params).is_err(), "{bad}");
            assert_eq!(d.accept_offers(&items), None, "{bad}");
            // Followed by a good offer, the good one is taken.
            let mut two = items.clone();
            two.extend(offers("permessage-deflate; client_no_context_takeover"));
            assert!(
                d.accept_offers(&two)
                    .unwrap()
                    .params()
                    .client_no_context_takeover,
                "{bad}"
            );
        }
        // Other extensions are passed over; none at all is no deflate.
        let a = d
            .accept_offers(&offers("x-webkit-deflate-frame, permessage-deflate"))
            .unwrap();
        assert_eq!(a.response(), NAME);
        assert_eq!(d.accept_offers(&offers("x-webkit-deflate-frame")), None);
        assert_eq!(d.accept_offers(&[]), None);
    }

    #[test]
    fn our_client_takes_every_answer_of_our_server_and_both_codecs_agree() {
        let windows = [None, Some(8), Some(9), Some(12), Some(15)];
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for cb in windows {
            for sb in windows {
                for (cn, sn) in [(false, false), (true, false), (false, true), (true, true)] {
                    let cfg = DeflateConfig::default()
                        .client_max_window_bits(cb)
                        .server_max_window_bits(sb)
                        .client_no_context_takeover(cn)
                        .server_no_context_takeover(sn);
                    clients.push(cfg.clone());
                    servers.push(cfg);
                }
            }
        }
        let text = b"negotiated both ways, negotiated both ways ".repeat(40);
        for client in &clients {
            for server in servers.iter().step_by(7) {
                let offer = offers(&client.offer());
                let accepted = server
                    .accept_offers(&offer)
                    .expect("a valid offer is accepted");
                let answer = offers(accepted.response());
                let n = client.negotiate(&answer[0].params).unwrap_or_else(|e| {
                    panic!("{} / {}: {e}", client.offer(), accepted.response())
                });
                assert_eq!(n, accepted.params(), "{}", accepted.response());
                // What each side asked for, it got.
                if let Some(b) = client.server_max_window_bits {
                    assert!(n.server_max_window_bits <= b);
                }
                if let Some(b) = server.server_max_window_bits {
                    assert!(n.server_max_window_bits <= b);
                }
                assert!(n.server_no_context_takeover >= client.server_no_context_takeover);
                assert!(n.server_no_context_takeover >= server.server_no_context_takeover);
                assert!(n.client_no_context_takeover >= server.client_no_context_takeover);
                // Messages cross both ways, twice (the second under context takeover, if any).
                let mut c_tx = Deflate::new(client.clone(), n);
                let mut c_rx = Deflate::new(client.clone(), n);
                let mut s_tx = Deflate::new_server(server.clone(), n);
                let mut s_rx = Deflate::new_server(server.clone(), n);
                for _ in 0..2 {
                    let up = c_tx
                        .encode(OpCode::Text, &text)
                        .unwrap()
                        .map(<[u8]>::to_vec);
                    if let Some(up) = up {
                        assert_eq!(inflate(&mut s_rx, &[&up]), text);
                    }
                    let down = s_tx
                        .encode(OpCode::Text, &text)
                        .unwrap()
                        .map(<[u8]>::to_vec);
                    assert_eq!(down.is_none(), n.server_max_window_bits == 8);
                    if let Some(down) = down {
                        assert_eq!(inflate(&mut c_rx, &[&down]), text);
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_offer_is_declined_or_answered_within_the_rfc(
            params in proptest::collection::vec(
                (0usize..6, proptest::option::of(0u16..300)),
                0..6,
            )
        ) {
            const NAMES: [&str; 6] = [
                "server_no_context_takeover",
                "client_no_context_takeover",
                "server_max_window_bits",
                "client_max_window_bits",
                "SERVER_MAX_WINDOW_BITS",
                "x_other",
            ];
            let offer: Vec<ExtensionParam> = params
                .iter()
                .map(|&(n, v)| ExtensionParam {
                    name: NAMES[n].to_owned(),
                    value: v.map(|v| v.to_string()),
                })
                .collect();
            if let Ok(a) = DeflateConfig::default().accept_offer(&offer) {
                let answer = parse_extensions(a.response()).unwrap();
                proptest::prop_assert_eq!(answer.len(), 1);
                for p in &answer[0].params {
                    // Only what the client offered comes back, and windows stay within 8 to 15.
                    proptest::prop_assert!(offer.iter().any(|o| o.name.eq_ignore_ascii_case(&p.name)));
                    if let Some(v) = &p.value {
                        proptest::prop_assert!((8..=15).contains(&v.parse::<u8>().unwrap()));
                    }
                }
                let n = a.params();
                proptest::prop_assert!((8..=15).contains(&n.client_max_window_bits));
                proptest::prop_assert!((8..=15).contains(&n.server_max_window_bits));
            }
        }
    }

    #[test]
    fn server_codec_deflates_under_its_own_parameters() {
        // server_no_context_takeover: each message stands alone, as RFC 7692 §7.2.3.1 shows.
        let a = DeflateConfig::default()
            .accept_offers(&offers("permessage-deflate; server_no_context_takeover"))
            .unwrap();
        let mut s = Deflate::new_server(DeflateConfig::default(), a.params());
        for _ in 0..2 {
            assert_eq!(
                s.encode(OpCode::Text, b"Hello").unwrap().unwrap(),
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            );
        }
        // client_no_context_takeover alone: the server keeps its own context (§7.2.3.2)...
        let a = DeflateConfig::default()
            .accept_offers(&offers("permessage-deflate; client_no_context_takeover"))
            .unwrap();
        let mut s = Deflate::new_server(DeflateConfig::default(), a.params());
        s.encode(OpCode::Text, b"Hello").unwrap();
        assert_eq!(
            s.encode(OpCode::Text, b"Hello").unwrap().unwrap(),
            &[0xf2, 0x00, 0x11, 0x00, 0x00]
        );
        // ...and resets its inflater after each message: a back reference into the previous
        // message is then an error, not the previous message's bytes.
        let mut s = Deflate::new_server(DeflateConfig::default(), a.params());
        assert_eq!(
            inflate(&mut s, &[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]]),
            b"Hello"
        );
        let mut out = Vec::new();
        assert!(
            s.decode(&[0xf2, 0x00, 0x11, 0x00, 0x00], true, &mut out, 1000)
                .is_err()
        );
        // An 8-bit window for the server: it sends uncompressed.
        let a = DeflateConfig::default()
            .accept_offers(&offers("permessage-deflate; server_max_window_bits=8"))
            .unwrap();
        let mut s = Deflate::new_server(DeflateConfig::default(), a.params());
        assert!(
            s.encode(OpCode::Text, b"Hello Hello Hello")
                .unwrap()
                .is_none()
        );
    }

    /// A state is made by a direction's first message, and kept only where the next message
    /// may refer back into it.
    #[test]
    fn states_are_made_lazily_and_dropped_without_context_takeover() {
        let text = b"idle idle idle idle".repeat(20);
        for (client_nct, server_nct) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let nct = |on: bool, who: &str| {
                if on {
                    format!("; {who}_no_context_takeover")
                } else {
                    String::new()
                }
            };
            let answer = nct(client_nct, "client") + &nct(server_nct, "server");
            let mut tx = codec(DeflateConfig::default(), &answer);
            let mut rx = codec(DeflateConfig::default(), &answer);
            // What the peer sends, with or without context takeover as negotiated.
            let mut peer = codec(DeflateConfig::default(), &nct(server_nct, "client"));
            assert!(tx.compress.is_none() && rx.decompress.is_none(), "lazy");
            for _ in 0..2 {
                tx.encode(OpCode::Text, &text).unwrap().unwrap();
                assert_eq!(tx.compress.is_some(), !client_nct, "{answer}");
                let c = peer.encode(OpCode::Text, &text).unwrap().unwrap().to_vec();
                assert_eq!(inflate(&mut rx, &[&c[..5], &c[5..]]), text, "{answer}");
                assert_eq!(rx.decompress.is_some(), !server_nct, "{answer}");
            }
        }
    }

    /// memLevel reaches the deflater: at 1 its few buffered symbols end blocks early and the
    /// output grows; every level round-trips.
    #[test]
    fn mem_level_reaches_the_deflater() {
        let mut x = 0x9e37_79b9_u32;
        let text: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b"{}\":,abcdefgh0123456789 "[(x % 24) as usize]
            })
            .collect();
        let size = |level: u8| {
            let cfg = DeflateConfig::default().mem_level(level);
            let mut tx = codec(cfg.clone(), "");
            let c = tx.encode(OpCode::Text, &text).unwrap().unwrap().to_vec();
            let mut rx = codec(cfg, "");
            assert_eq!(inflate_big(&mut rx, &c), text, "memLevel {level}");
            c.len()
        };
        let (one, eight) = (size(1), size(8));
        assert!(one > eight, "memLevel 1: {one} bytes, 8: {eight}");
        size(5);
        size(9);
    }

    fn inflate_big(d: &mut Deflate, c: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        d.decode(c, true, &mut out, 1 << 24).unwrap();
        out
    }

    #[test]
    fn window_bits_8_sends_uncompressed() {
        let mut d = codec(DeflateConfig::default(), "; client_max_window_bits=8");
        assert!(
            d.encode(OpCode::Text, b"Hello Hello Hello")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn threshold_and_predicate() {
        let mut d = codec(
            DeflateConfig::default()
                .compress_if_bigger_than(10)
                .compress_if(|op, _| op == OpCode::Text),
            "",
        );
        assert!(d.encode(OpCode::Text, b"short").unwrap().is_none());
        assert!(
            d.encode(OpCode::Binary, b"long enough to compress")
                .unwrap()
                .is_none()
        );
        assert!(
            d.encode(OpCode::Text, b"long enough to compress")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn bomb_is_refused_at_the_limit() {
        // 1 GiB of zeros deflates to about 1 MiB; inflating must stop at the limit.
        let mut c = Compress::new(Compression::best(), false);
        let zeros = vec![0u8; 1 << 20];
        let mut bomb = Vec::with_capacity(1100 << 10);
        for _ in 0..1024 {
            c.compress_vec(&zeros, &mut bomb, FlushCompress::None)
                .unwrap();
            if bomb.capacity() - bomb.len() < 4096 {
                bomb.reserve(64 << 10);
            }
        }
        c.compress_vec(&[], &mut bomb, FlushCompress::Sync).unwrap();
        assert!(bomb.len() < 2 << 20, "{}", bomb.len());
        let mut d = codec(DeflateConfig::default(), "");
        let mut out = Vec::new();
        let limit = 16 << 20;
        let err = d.decode(&bomb, true, &mut out, limit).unwrap_err();
        assert!(matches!(err, DecodeError::TooBig { size } if size > limit as u64));
        assert!(out.capacity() <= limit + 1, "{}", out.capacity());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut d = codec(DeflateConfig::default(), "");
        let mut out = Vec::new();
        assert!(matches!(
            d.decode(&[0xff, 0xff, 0xff], true, &mut out, 1000),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
