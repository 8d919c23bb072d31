//! Durations and byte sizes in the config file, one syntax each:
//! durations as [`humantime`] reads them (`300s`, `1h30m`, `250ms`), sizes
//! as [`bytesize`] reads them (`32MiB`, `1 KiB`, `2MB`, `100B`).
//!
//! Units are required for both: a bare `10` is an error, never silently
//! seconds in one field and milliseconds in another (only `0` needs no
//! unit for a duration).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration parsed from text with a unit (`300s`, `1h30m`, `250ms`).
///
/// ```
/// use std::time::Duration;
/// use bbr_axum_example::config::parse_duration;
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert!(parse_duration("10").is_err(), "a unit is required");
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text.trim())
}

/// A byte size parsed from text with a unit (`32MiB`, `1 KiB`, `2MB`, `100B`).
///
/// ```
/// use bbr_axum_example::config::parse_byte_size;
/// assert_eq!(parse_byte_size("32MiB").unwrap(), 32 << 20);
/// assert_eq!(parse_byte_size("100B").unwrap(), 100);
/// assert!(parse_byte_size("100").is_err(), "a unit is required");
/// ```
pub fn parse_byte_size(text: &str) -> Result<u64, ByteSizeError> {
    let text = text.trim();
    let invalid = || ByteSizeError { given: text.into() };
    // bytesize reads a bare number as bytes; the config wants the unit.
    if !text.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(invalid());
    }
    let size: bytesize::ByteSize = text.parse().map_err(|_| invalid())?;
    Ok(size.as_u64())
}

/// A byte size that is not a number with a unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid byte size `{given}` (a number with a unit: 100B, 64KiB, 32MiB, 2GB)")]
pub struct ByteSizeError {
    given: Box<str>,
}

/// A config value read from a YAML string through its `FromStr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed<T>(pub(crate) T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim()
            .parse()
            .map(Parsed)
            .map_err(serde::de::Error::custom)
    }
}

/// `deserialize_with` for a field read through `T`'s `FromStr`.
pub(crate) fn from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    Parsed::<T>::deserialize(deserializer).map(|parsed| parsed.0)
}

/// `deserialize_with` for an optional field read through `T`'s `FromStr`
/// (with `#[serde(default)]` for the absent case).
pub(crate) fn opt_from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    Option::<Parsed<T>>::deserialize(deserializer).map(|parsed| parsed.map(|p| p.0))
}

/// `deserialize_with` for a duration field.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    from_str::<D, ConfigDuration>(deserializer).map(|d| d.0)
}

/// `deserialize_with` for an optional duration field.
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    opt_from_str::<D, ConfigDuration>(deserializer).map(|d| d.map(|d| d.0))
}

/// `deserialize_with` for an optional byte size field.
pub(crate) fn opt_bytes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    opt_from_str::<D, ConfigBytes>(deserializer).map(|b| b.map(|b| b.0))
}

/// `deserialize_with` for an optional header name field (lowercased).
pub(crate) fn opt_header_name<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    opt_from_str::<D, http::HeaderName>(deserializer).map(|n| n.map(|n| n.as_str().to_owned()))
}

/// A header name as the gateway keeps it: a valid HTTP field name,
/// lowercase (`X-Session-Id` is `x-session-id`).
///
/// ```
/// use bbr_axum_example::config::parse_header_name;
/// assert_eq!(parse_header_name("X-Session-Id").unwrap(), "x-session-id");
/// assert!(parse_header_name("two words").is_err());
/// assert!(parse_header_name("").is_err());
/// ```
pub fn parse_header_name(text: &str) -> Result<String, http::header::InvalidHeaderName> {
    http::HeaderName::from_str(text).map(|name| name.as_str().to_owned())
}

/// A duration field ([`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigDuration(pub(crate) Duration);

impl FromStr for ConfigDuration {
    type Err = humantime::DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration(text).map(ConfigDuration)
    }
}

/// A byte size field ([`parse_byte_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigBytes(pub(crate) u64);

impl FromStr for ConfigBytes {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_byte_size(text).map(ConfigBytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("2m5s100ms").unwrap(),
            Duration::from_millis(125_100)
        );
        assert_eq!(
            parse_duration("0").unwrap(),
            Duration::ZERO,
            "zero needs no unit"
        );
        for bad in ["10", "s", "10x", "", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_sizes_need_units() {
        assert_eq!(parse_byte_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_byte_size("1 KiB").unwrap(), 1024);
        assert_eq!(parse_byte_size("100B").unwrap(), 100);
        assert_eq!(parse_byte_size("2MB").unwrap(), 2_000_000);
        for bad in ["100", "2XB", "", "MiB", "-1KiB"] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn yaml_values_parse_through_from_str() {
        let policy: Parsed<bbr_core::contract::MissingModel> =
            serde_norway::from_str("reject").unwrap();
        assert_eq!(policy.0, bbr_core::contract::MissingModel::Reject);
        let error = serde_norway::from_str::<Parsed<bbr_core::contract::MissingModel>>("drop")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown missing-model policy `drop`"),
            "{error}"
        );
        assert!(serde_norway::from_str::<Parsed<ConfigBytes>>("1048576").is_err());
    }
}
