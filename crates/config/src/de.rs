//! Serde helpers that make the typed model read YAML the way LiteFS (`gopkg.in/yaml.v3`) does.
//!
//! * A key written with no value (`key:`, `key: ~`, `key: null`) leaves the setting at its
//!   default. The helpers here turn a null into the type's zero value; `load::restore_defaults`
//!   then puts back the LiteFS default for the few settings whose default is not zero.
//! * Booleans also accept YAML 1.1 spellings (`yes`, `no`, `on`, `off`, `y`, `n`), which
//!   yaml.v3 accepts when the target is a `bool`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Deserialises `T`, reading a null as `T::default()`.
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Deserialises a boolean the way yaml.v3 does for a `bool` field (null reads as `false`).
pub(crate) fn bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    deserializer.deserialize_option(BoolVisitor)
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean (true or false)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v {
            "true" | "True" | "TRUE" | "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
                Ok(true)
            }
            "false" | "False" | "FALSE" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off"
            | "OFF" => Ok(false),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A visitor for values written as one string and parsed by `parse`; a null is parsed as `""`.
///
/// Parse errors are raised while the scalar is being visited, so the YAML error carries the
/// scalar's line and column.
pub(crate) struct StrVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    marker: PhantomData<T>,
}

impl<T> StrVisitor<T> {
    pub(crate) fn new(expecting: &'static str, parse: fn(&str) -> Result<T, String>) -> Self {
        StrVisitor {
            expecting,
            parse,
            marker: PhantomData,
        }
    }
}

impl<'de, T> Visitor<'de> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        self.visit_str("")
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        self.visit_str("")
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

/// Deserialises a string-valued setting through `StrVisitor`; a null is parsed as `""`.
pub(crate) fn str_value<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    deserializer.deserialize_option(StrVisitor::new(expecting, parse))
}
