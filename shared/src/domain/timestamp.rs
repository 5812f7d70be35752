//! One timestamp format everywhere: RFC 3339, UTC, microseconds, fixed width,
//! so that the text sorts in time order (DynamoDB sort keys rely on it).

use time::{OffsetDateTime, UtcOffset, format_description::FormatItem, macros::format_description};

const FIXED_RFC3339: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub fn format(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(FIXED_RFC3339)
        .expect("a UTC date between years 0 and 9999 always formats")
}

/// Reads any RFC 3339 timestamp.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Microseconds since the Unix epoch: a compact, totally ordered form of a timestamp.
pub fn unix_micros(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000
}

/// Serde helpers for envelope fields: written in the fixed format, read as any RFC 3339.
pub mod serde_fixed {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_are_fixed_width_utc_and_sort_in_time_order() {
        let early = datetime!(2026-11-21 05:30:10.5 +02:00);
        let late = datetime!(2026-11-21 03:30:10.500001 UTC);
        assert_eq!(format(early), "2026-11-21T03:30:10.500000Z");
        assert_eq!(format(late), "2026-11-21T03:30:10.500001Z");
        assert!(format(early) < format(late));
    }
}
