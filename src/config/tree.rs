//! The parsed TOML tree as serde input, with an error type that tells an unknown key from a bad
//! value.
//!
//! The configuration is derived (`#[derive(Deserialize)]` with `deny_unknown_fields`) but read
//! from this tree rather than from the `toml` crate's own deserialiser, for two reasons:
//!
//! - An unknown key must read "key: unknown key". serde reports it through
//!   [`serde::de::Error::unknown_field`], which here becomes [`FieldError::UnknownKey`]: the
//!   message is decided by the type, never by reading serde's wording.
//! - Every value is handed to its reader whole ([`Raw`]), dates included, so that a reader says
//!   "expected a string, found datetime" in the words of the TOML types.
//!
//! Tables are walked in the order of the parsed table (sorted by key), so that of two bad keys
//! the same one is reported every time.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// Why one key was refused; the key itself is the path serde_path_to_error tracks.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("unknown key")]
    UnknownKey,
    #[error("{0}")]
    Refused(String),
}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(reason: T) -> FieldError {
        FieldError::Refused(reason.to_string())
    }

    fn unknown_field(_: &str, _: &'static [&'static str]) -> FieldError {
        FieldError::UnknownKey
    }
}

/// One node of the parsed file.
pub struct Tree(pub toml::Value);

impl Tree {
    /// Tables are the only structure a key's reader asks for; anything else is named by its
    /// TOML type.
    fn table<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.0 {
            toml::Value::Table(_) => self.deserialize_any(visitor),
            other => Err(FieldError::Refused(format!(
                "expected a table, found {}",
                other.type_str()
            ))),
        }
    }
}

impl<'de> IntoDeserializer<'de, FieldError> for Tree {
    type Deserializer = Tree;

    fn into_deserializer(self) -> Tree {
        self
    }
}

impl<'de> Deserializer<'de> for Tree {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.0 {
            toml::Value::String(text) => visitor.visit_string(text),
            toml::Value::Integer(n) => visitor.visit_i64(n),
            toml::Value::Float(x) => visitor.visit_f64(x),
            toml::Value::Boolean(b) => visitor.visit_bool(b),
            // serde has no date type: a date travels as a newtype around its text, which only
            // `Raw` takes (and turns back into a date).
            toml::Value::Datetime(date) => {
                visitor.visit_newtype_struct(date.to_string().into_deserializer())
            }
            toml::Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(Tree));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            toml::Value::Table(table) => {
                let mut map = MapDeserializer::new(table.into_iter().map(|(k, v)| (k, Tree(v))));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_some(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        self.table(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.table(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct enum identifier ignored_any
    }
}

/// A value exactly as the file wrote it, for a reader that checks it and says why not.
pub struct Raw(pub toml::Value);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Raw, E> {
        Ok(Raw(toml::Value::Boolean(b)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Raw, E> {
        Ok(Raw(toml::Value::Integer(n)))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Raw, E> {
        Ok(Raw(toml::Value::Float(x)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Raw, E> {
        Ok(Raw(toml::Value::String(text.to_string())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Raw, E> {
        Ok(Raw(toml::Value::String(text)))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, date: D) -> Result<Raw, D::Error> {
        let text = String::deserialize(date)?;
        text.parse()
            .map(|date| Raw(toml::Value::Datetime(date)))
            .map_err(de::Error::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(Raw(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw(toml::Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut table = toml::Table::new();
        while let Some((key, Raw(value))) = map.next_entry::<String, Raw>()? {
            table.insert(key, value);
        }
        Ok(Raw(toml::Value::Table(table)))
    }
}

/// A table's entries in order, each key and value read by its own type: for tables keyed by
/// domain, whose keys are checked as the values are.
pub struct Entries<K, V>(pub Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entries<K, V>, D::Error> {
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

struct EntriesVisitor<K, V>(std::marker::PhantomData<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
    type Value = Entries<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<K, V>, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}
