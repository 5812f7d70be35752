//! One timestamp format everywhere: RFC 3339, UTC, microseconds, fixed width,
//! so that the text sorts in time order (DynamoDB sort keys rely on it).

use time::{
    Duration, OffsetDateTime, UtcOffset, format_description::FormatItem, macros::format_description,
};

const FIXED_RFC3339: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// How far in the past a like's `accepted_at` may be when it is applied: SQS
/// keeps a message at most 14 days, plus a day of margin. It stays well under
/// the 30 days an unlike's tombstone is kept, so no older like can resurrect one.
pub const MAX_LIKE_AGE: Duration = Duration::days(15);
/// How far in the past a points operation's `accepted_at` may be. Points have no
/// tombstone to outlive; what Tally recorded is re-driven from its record until
/// it settles, so this only refuses times no sane sender writes, with a year of
/// room for any outage.
pub const MAX_POINTS_AGE: Duration = Duration::days(365);
/// How far in the future `accepted_at` may be: clock skew between hosts. A
/// later time would let a sender win "last accepted wins" races it should lose.
pub const MAX_ACCEPTED_SKEW: Duration = Duration::minutes(5);

pub fn format(at: OffsetDateTime) -> String {
    // A stored time with an offset may lie past year 9999 in UTC: no panic.
    let Some(utc) = at.checked_to_offset(UtcOffset::UTC) else {
        return at.unix_timestamp().to_string();
    };
    // Years outside 0..=9999 have no fixed-width form; `accepted_at` is checked
    // against the window above before anything is stored, so this is a fallback
    // that keeps a log line or an error message from panicking.
    utc.format(FIXED_RFC3339)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptedAtOutOfRange {
    #[error("accepted_at {at} is more than {days} days before now ({now})")]
    TooOld { at: String, now: String, days: i64 },
    #[error("accepted_at {at} is more than {} minutes after now ({now})", MAX_ACCEPTED_SKEW.whole_minutes())]
    InTheFuture { at: String, now: String },
}

/// Checks that an operation's accept time is a sane one at `now` (SPEC section 4):
/// at most `max_age` old ([`MAX_LIKE_AGE`], [`MAX_POINTS_AGE`]), at most
/// [`MAX_ACCEPTED_SKEW`] ahead.
pub fn check_accepted_at(
    at: OffsetDateTime,
    now: OffsetDateTime,
    max_age: Duration,
) -> Result<(), AcceptedAtOutOfRange> {
    // Differences of two representable times never overflow `Duration`.
    let age = now - at;
    if age > max_age {
        return Err(AcceptedAtOutOfRange::TooOld {
            at: format(at),
            now: format(now),
            days: max_age.whole_days(),
        });
    }
    if -age > MAX_ACCEPTED_SKEW {
        return Err(AcceptedAtOutOfRange::InTheFuture {
            at: format(at),
            now: format(now),
        });
    }
    Ok(())
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

/// [`serde_fixed`] for an optional time (`null` when absent); serialize only.
pub mod serde_fixed_option {
    use serde::Serializer;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&super::format(*at)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_past_year_9999_in_utc_formats_without_panicking() {
        let at = OffsetDateTime::parse(
            "9999-12-31T23:00:00-05:00",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(format(at), at.unix_timestamp().to_string());
    }
    use time::macros::datetime;

    #[test]
    fn timestamps_are_fixed_width_utc_and_sort_in_time_order() {
        let early = datetime!(2026-11-21 05:30:10.5 +02:00);
        let late = datetime!(2026-11-21 03:30:10.500001 UTC);
        assert_eq!(format(early), "2026-11-21T03:30:10.500000Z");
        assert_eq!(format(late), "2026-11-21T03:30:10.500001Z");
        assert!(format(early) < format(late));
    }

    #[test]
    fn accept_times_far_from_now_are_refused() {
        let now = datetime!(2026-11-30 12:00 UTC);
        let likes = MAX_LIKE_AGE;
        assert!(check_accepted_at(now, now, likes).is_ok());
        assert!(check_accepted_at(now - Duration::days(14), now, likes).is_ok());
        assert!(check_accepted_at(now + Duration::minutes(4), now, likes).is_ok());
        assert!(matches!(
            check_accepted_at(now - Duration::days(16), now, likes),
            Err(AcceptedAtOutOfRange::TooOld { .. })
        ));
        assert!(check_accepted_at(now - Duration::days(16), now, MAX_POINTS_AGE).is_ok());
        assert!(check_accepted_at(now - Duration::days(366), now, MAX_POINTS_AGE).is_err());
        assert!(matches!(
            check_accepted_at(datetime!(9999-12-31 23:59:59.999999 UTC), now, likes),
            Err(AcceptedAtOutOfRange::InTheFuture { .. })
        ));
        assert!(check_accepted_at(datetime!(-9999-01-01 00:00 UTC), now, MAX_POINTS_AGE).is_err());
    }
}
