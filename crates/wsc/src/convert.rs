//! Typed messages through content converters: the analog of Ktor's `WebsocketContentConverter`,
//! `sendSerialized` and `receiveDeserialized`.
//!
//! A converter turns any `Serialize` value into a [`Message`] and reads a message back into any
//! `DeserializeOwned` type. Converters are trait objects set once on the [`Client`](crate::Client),
//! so values cross the trait through `erased-serde`. JSON ([`Json`], text frames, feature
//! `json`, on by default), CBOR (`Cbor`, feature `cbor`) and MessagePack (`MessagePack`, feature
//! `msgpack`) send
//! binary frames.

use std::fmt;

use wsc_proto::Message;

/// A converter's own error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a converter calls to hand the message's deserializer to the caller's type.
pub type Visit<'v> =
    &'v mut dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error>;

/// Serializes values to messages and back.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use wsc::convert::{Converter, Json};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct Point { x: i32, y: i32 }
///
/// let m = Json.serialize(&Point { x: 1, y: 2 }).unwrap();
/// assert_eq!(m.as_text(), Some(r#"{"x":1,"y":2}"#));
/// let p: Point = wsc::convert::deserialize(&Json, &m).unwrap();
/// assert_eq!(p, Point { x: 1, y: 2 });
/// ```
pub trait Converter: Send + Sync + fmt::Debug {
    /// Serializes `value` into a message (text or binary, as the format is).
    fn serialize(&self, value: &dyn erased_serde::Serialize) -> Result<Message, BoxError>;
    /// Whether this converter can read `message` (e.g. JSON reads text frames only).
    fn is_applicable(&self, message: &Message) -> bool;
    /// Builds a deserializer over `message` and passes it to `visit`.
    fn deserialize(&self, message: &Message, visit: Visit<'_>) -> Result<(), BoxError>;
}

/// Reads a `T` from `message` with `converter`.
pub fn deserialize<T: serde::de::DeserializeOwned>(
    converter: &dyn Converter,
    message: &Message,
) -> Result<T, BoxError> {
    if !converter.is_applicable(message) {
        return Err(Box::new(NotApplicable {
            text: message.is_text(),
        }));
    }
    let mut out: Option<T> = None;
    converter.deserialize(message, &mut |de| {
        out = Some(erased_serde::deserialize::<T>(de)?);
        Ok(())
    })?;
    out.ok_or_else(|| "the converter produced no value".into())
}

/// The message is of a kind the converter does not read.
#[derive(Debug, Clone, Copy)]
pub struct NotApplicable {
    text: bool,
}

impl fmt::Display for NotApplicable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the converter does not read {} messages",
            if self.text { "text" } else { "binary" }
        )
    }
}

impl std::error::Error for NotApplicable {}

/// JSON through serde_json, as text messages.
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Converter for Json {
    fn serialize(&self, value: &dyn erased_serde::Serialize) -> Result<Message, BoxError> {
        let mut buf = Vec::with_capacity(128);
        erased_serde::serialize(value, &mut serde_json::Serializer::new(&mut buf))?;
        Ok(Message::Text(wsc_proto::Utf8Bytes::try_from_bytes(
            buf.into(),
        )?))
    }
    fn is_applicable(&self, message: &Message) -> bool {
        message.is_text()
    }
    fn deserialize(&self, message: &Message, visit: Visit<'_>) -> Result<(), BoxError> {
        let mut de = serde_json::Deserializer::from_slice(message.as_bytes());
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de))?;
        de.end()?;
        Ok(())
    }
}

/// CBOR (RFC 8949) through minicbor-serde, as binary messages.
#[cfg(feature = "cbor")]
#[cfg_attr(docsrs, doc(cfg(feature = "cbor")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Cbor;

#[cfg(feature = "cbor")]
impl Converter for Cbor {
    fn serialize(&self, value: &dyn erased_serde::Serialize) -> Result<Message, BoxError> {
        let mut buf = Vec::with_capacity(128);
        erased_serde::serialize(value, &mut minicbor_serde::Serializer::new(&mut buf))?;
        Ok(Message::Binary(buf.into()))
    }
    fn is_applicable(&self, message: &Message) -> bool {
        message.is_binary()
    }
    fn deserialize(&self, message: &Message, visit: Visit<'_>) -> Result<(), BoxError> {
        let mut de = minicbor_serde::Deserializer::new(message.as_bytes());
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de))?;
        Ok(())
    }
}

/// MessagePack through rmp-serde (structs as maps), as binary messages.
#[cfg(feature = "msgpack")]
#[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePack;

#[cfg(feature = "msgpack")]
impl Converter for MessagePack {
    fn serialize(&self, value: &dyn erased_serde::Serialize) -> Result<Message, BoxError> {
        let mut buf = Vec::with_capacity(128);
        erased_serde::serialize(
            value,
            &mut rmp_serde::Serializer::new(&mut buf).with_struct_map(),
        )?;
        Ok(Message::Binary(buf.into()))
    }
    fn is_applicable(&self, message: &Message) -> bool {
        message.is_binary()
    }
    fn deserialize(&self, message: &Message, visit: Visit<'_>) -> Result<(), BoxError> {
        let mut de = rmp_serde::Deserializer::from_read_ref(message.as_bytes());
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de))?;
        Ok(())
    }
}

#[cfg(all(test, any(feature = "json", feature = "cbor", feature = "msgpack")))]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Order {
        id: u64,
        items: Vec<String>,
        note: Option<String>,
    }

    fn round_trip(c: &dyn Converter) {
        let o = Order {
            id: 7,
            items: vec!["a".into(), "b".into()],
            note: None,
        };
        let m = c.serialize(&o).unwrap();
        assert_eq!(deserialize::<Order>(c, &m).unwrap(), o);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json() {
        round_trip(&Json);
        assert!(deserialize::<Order>(&Json, &Message::text("{\"id\":1")).is_err());
        assert!(
            deserialize::<Order>(&Json, &Message::binary(vec![1u8]))
                .unwrap_err()
                .is::<NotApplicable>()
        );
        assert!(deserialize::<u8>(&Json, &Message::text("1 trailing")).is_err());
    }

    #[cfg(feature = "cbor")]
    #[test]
    fn cbor() {
        round_trip(&Cbor);
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack() {
        round_trip(&MessagePack);
    }
}
