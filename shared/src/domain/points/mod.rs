//! The ledger rules, all of them: what a caller may ask ([`request`]), what
//! becomes of an operation ([`operation`]: statuses, rejections, the record a
//! same-key retry is answered from), how accounts change ([`ledger`]: lots,
//! holds, entries, the planning rule of every kind), and what an audit checks
//! ([`audit`]). Nothing here knows about DynamoDB, SQS or HTTP.
//!
//! An account holds a balance, the `seq` of its newest ledger entry, its
//! available **lots** (how many of its points expire at each moment) and its
//! open **holds** (points reserved for a checkout, each with the lots it took).
//! Lot expiries are rounded up to the next UTC midnight, so an account holds at
//! most one lot per day (a year of daily purchases is ~366 lots) and its lots fit
//! in the account item.

pub mod audit;
pub mod insight;
pub mod ledger;
pub mod operation;
pub mod request;

pub use audit::{Finding, audit};
pub use ledger::{
    Account, AccountChange, Entry, EntryKind, LinkedUpdate, MAX_OPEN_HOLDS, OpenHold, Plan,
    Snapshot, close_for_erasure, plan, settle_due,
};
pub use operation::{OperationRecord, OperationStatus, Rejection, WrittenEntry};
pub use request::{
    Adjustment, Capture, Grant, Hold, InvalidRequest, PointsOperation, PointsRequest, Refund,
    Release, RequestBody, Spend, Transfer, parse_body,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, Time};

use super::timestamp;

/// Amounts are integers from 1 to this (SPEC section 3).
pub const MAX_AMOUNT: u64 = 1_000_000_000;
/// Longest `description` a write may carry, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The largest balance an account may hold: every balance and signed entry
/// amount then fits an `i64`, so no sum over a ledger can overflow.
pub const MAX_BALANCE: u64 = i64::MAX as u64;

/// How many points an operation moves: 1 to [`MAX_AMOUNT`]. Read from any
/// JSON number that is a whole number (`30`, `30.0`, `3e1`: JSON Schema's
/// `integer`), written as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u64")]
pub struct Amount(u64);

/// An adjustment's amount: a credit (positive) or a debit (negative) of 1 to
/// [`MAX_AMOUNT`] points, never 0. Read like [`Amount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "i64")]
pub struct SignedAmount(i64);

/// Reads any whole JSON number exactly (as `i128`), refusing fractions.
struct WholeNumber(&'static str);

impl serde::de::Visitor<'_> for WholeNumber {
    type Value = i128;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.0)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<i128, E> {
        Ok(value.into())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<i128, E> {
        Ok(value.into())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<i128, E> {
        if value.fract() != 0.0 {
            return Err(E::custom(format!(
                "amount must be a whole number of points, got {value}"
            )));
        }
        // Saturates far outside every range checked after it.
        Ok(value as i128)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = deserializer.deserialize_any(WholeNumber("a whole number of points"))?;
        u64::try_from(value)
            .map_err(|_| AmountOutOfRange(value.to_string()))
            .and_then(Amount::new)
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for SignedAmount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = deserializer.deserialize_any(WholeNumber("a whole number of points"))?;
        i64::try_from(value)
            .map_err(|_| AmountOutOfRange(value.to_string()))
            .and_then(SignedAmount::new)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amount must be from 1 to {MAX_AMOUNT}, got {0}")]
pub struct AmountOutOfRange(pub String);

impl Amount {
    pub fn new(value: u64) -> Result<Self, AmountOutOfRange> {
        if (1..=MAX_AMOUNT).contains(&value) {
            Ok(Self(value))
        } else {
            Err(AmountOutOfRange(value.to_string()))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The amount as a signed entry amount (it is at most [`MAX_AMOUNT`]).
    pub fn signed(self) -> i64 {
        self.0 as i64
    }
}

impl From<Amount> for u64 {
    fn from(amount: Amount) -> u64 {
        amount.0
    }
}

impl SignedAmount {
    pub fn new(value: i64) -> Result<Self, AmountOutOfRange> {
        if value != 0 && value.unsigned_abs() <= MAX_AMOUNT {
            Ok(Self(value))
        } else {
            Err(AmountOutOfRange(value.to_string()))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// How many points move, whichever way.
    pub fn magnitude(self) -> u64 {
        self.0.unsigned_abs()
    }
}

impl From<SignedAmount> for i64 {
    fn from(amount: SignedAmount) -> i64 {
        amount.0
    }
}

/// When a lot's points expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiry {
    At(OffsetDateTime),
    Never,
}

impl Expiry {
    /// Points granted at `at` with this lifetime expire at the first UTC midnight
    /// at or after `at + lifetime`; without a lifetime they never do.
    /// A date past the calendar's end (year 9999) never comes: `Never`.
    pub fn after(at: OffsetDateTime, lifetime: Option<Duration>) -> Self {
        let due = lifetime.and_then(|lifetime| at.checked_add(lifetime));
        let Some(due) = due.map(|due| due.to_offset(time::UtcOffset::UTC)) else {
            return Expiry::Never;
        };
        let midnight = due.replace_time(Time::MIDNIGHT);
        if midnight == due {
            return Expiry::At(due);
        }
        midnight
            .checked_add(Duration::days(1))
            .map_or(Expiry::Never, Expiry::At)
    }

    /// The stored form: the fixed-width timestamp, or `never`.
    pub fn key(&self) -> String {
        match self {
            Expiry::At(at) => timestamp::format(*at),
            Expiry::Never => "never".to_owned(),
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        if key == "never" {
            return Some(Expiry::Never);
        }
        OffsetDateTime::parse(key, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(Expiry::At)
    }
}

impl Serialize for Expiry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.key())
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        Expiry::from_key(&key)
            .ok_or_else(|| serde::de::Error::custom(format!("{key:?} is not an expiry")))
    }
}

/// Points by the moment they expire: an account's available points, a hold's,
/// or what a spend took (and refunds may give back).
pub type Lots = BTreeMap<Expiry, u64>;

/// The sum of some lots, wide enough for any stored numbers.
pub fn lots_total(lots: &Lots) -> u128 {
    lots.values().map(|&amount| u128::from(amount)).sum()
}

/// The point types that ship with the service, from `shared/point-types.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointTypes(BTreeMap<String, Option<Duration>>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointTypeConfig {
    expires_after_days: Option<u16>,
    #[allow(dead_code)]
    description: String,
}

impl PointTypes {
    #[allow(
        clippy::expect_used,
        reason = "compiled-in data, checked by a unit test"
    )]
    pub fn shipped() -> Self {
        Self::from_json(include_str!("../../../point-types.json"))
            .expect("shared/point-types.json is valid (a unit test checks it)")
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let types: BTreeMap<String, PointTypeConfig> = serde_json::from_str(json)?;
        Ok(Self(
            types
                .into_iter()
                .map(|(name, t)| (name, t.expires_after_days.map(|d| Duration::days(d.into()))))
                .collect(),
        ))
    }

    /// The lifetime of a known point type (`Some(None)`: never expires).
    pub fn lifetime(&self, name: &str) -> Option<Option<Duration>> {
        self.0.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
