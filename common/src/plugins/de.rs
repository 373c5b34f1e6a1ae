//! serde helpers shared by the plugin configs.
//!
//! Integers and booleans also accept strings, as the entity fields do (`crate::config::de`):
//! `status_code: ${CODE}` is still a string after the variable is substituted. Ranges are
//! checked while decoding, with Kong's message, because a value outside a `u16` cannot even be
//! held until a later check could look at it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{Error, Unexpected};
use serde::{Deserialize, Deserializer, Serializer};

use crate::config::de as lenient;

/// A boolean: `true`/`false`, or the strings `"true"`/`"false"`.
pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    lenient::boolean(d)?.ok_or_else(|| D::Error::invalid_type(Unexpected::Unit, &"a boolean"))
}

/// An integer within Kong's inclusive range `LO..=HI`, held as `T`.
pub(super) fn int_in<'de, D, T, const LO: i64, const HI: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v =
        lenient::int(d)?.ok_or_else(|| D::Error::invalid_type(Unexpected::Unit, &"an integer"))?;
    in_range::<D::Error, T>(v, LO, HI)
}

/// As [`int_in`] for an optional field (`null` is unset).
pub(super) fn opt_int_in<'de, D, T, const LO: i64, const HI: i64>(
    d: D,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    lenient::int(d)?
        .map(|v| in_range::<D::Error, T>(v, LO, HI))
        .transpose()
}

fn in_range<E: Error, T: TryFrom<i64>>(v: i64, lo: i64, hi: i64) -> Result<T, E> {
    let out_of_range = || E::custom(format!("value should be between {lo} and {hi}"));
    if !(lo..=hi).contains(&v) {
        return Err(out_of_range());
    }
    T::try_from(v).map_err(|_| out_of_range())
}

/// A number, or a string holding one (`minute: "${RATE}"` is still a string after the
/// variable is substituted), as the integer fields accept.
#[derive(Deserialize)]
#[serde(untagged)]
enum LenientNumber {
    Number(f64),
    Text(String),
}

/// A number (integer or not), or a string holding one.
pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match LenientNumber::deserialize(d)? {
        LenientNumber::Number(n) => Ok(n),
        LenientNumber::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("expected a number, got '{t}'"))),
    }
}

/// As [`number`] for an optional field (`null` is unset: `Fields` drops nulls before decoding).
pub(super) fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d).map(Some)
}

/// A number within Kong's inclusive `between = { lo, hi }`.
pub(super) fn number_between<'de, D: Deserializer<'de>>(
    d: D,
    lo: f64,
    hi: f64,
) -> Result<f64, D::Error> {
    let v = number(d)?;
    if !(lo..=hi).contains(&v) {
        return Err(D::Error::custom(format!(
            "value should be between {lo} and {hi}"
        )));
    }
    Ok(v)
}

/// An optional list of IPs or CIDRs (Kong's `ip_or_cidr` typedef), written back as CIDRs.
pub(super) mod ip_list {
    use super::*;

    /// `["10.0.0.1", "10.1.0.0/16", "::1"]`: a bare address is a /32 (IPv4) or /128 (IPv6).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
        let entries = Option::<Vec<IpEntry>>::deserialize(d)?;
        Ok(entries.map(|list| list.into_iter().map(|e| e.0).collect()))
    }

    /// Each network as `addr/prefix`, so a re-read gives the same networks.
    pub fn serialize<S: Serializer>(list: &Option<Vec<IpNet>>, s: S) -> Result<S::Ok, S::Error> {
        match list {
            None => s.serialize_none(),
            Some(nets) => s.collect_seq(nets.iter().map(ToString::to_string)),
        }
    }
}

/// One `ip_or_cidr` entry.
struct IpEntry(IpNet);

impl<'de> Deserialize<'de> for IpEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_ip_or_cidr(&text)
            .map(IpEntry)
            .ok_or_else(|| D::Error::custom(format!("invalid ip or cidr range: '{text}'")))
    }
}

/// `addr` or `addr/prefix`, IPv4 or IPv6.
pub(super) fn parse_ip_or_cidr(text: &str) -> Option<IpNet> {
    if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    }
}
