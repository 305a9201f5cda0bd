//! How sqsbeat's values are stored as SQLite text, written once: every
//! table reads and writes instants, ids and JSON through these types, so a
//! row is a `#[derive(sqlx::FromRow)]` struct on either backend.
//!
//! - [`Ts`]: an instant as fixed-width UTC text (`2026-11-28T10:00:00.000000Z`):
//!   equal instants are equal strings and string order is time order, which
//!   the SQL relies on (`due_at <= ?`, `max(cursor, ...)`). Reading accepts
//!   any RFC 3339 text, since people write these columns by hand too.
//! - [`Id`]: a UUID as its hyphenated text (sqlx alone would store a blob).
//! - JSON: `serde_json::Value`'s own sqlx impls already read and write JSON
//!   text on SQLite (and jsonb on PostgreSQL); nothing is added here.
//!
//! On PostgreSQL the same types map to `timestamptz` and `uuid`; there
//! [`Ts`] is the checked decoder that turns `infinity` or a year beyond
//! chrono's range into a decode error instead of a panic (see
//! `store::postgres`).

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};
use uuid::Uuid;

/// An instant, stored as fixed-width UTC text on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub DateTime<Utc>);

/// A UUID, stored as hyphenated text on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(pub Uuid);

/// The fixed-width text of an instant.
pub fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// [`text`]'s form as an SQLite GLOB pattern, with which the SQL finds
/// instants written by hand in another form: their text order is not
/// their time order (see `store::jobs`).
pub const GLOB: &str = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'";

/// The shape [`GLOB`] matches, a digit for each `0`.
const SHAPE: &str = "0000-00-00T00:00:00.000000Z";

/// Whether `s` has [`text`]'s form (what [`GLOB`] matches): years 0 to
/// 9999 only; others are written with a sign and sort out of time order.
pub fn is_canonical(s: &str) -> bool {
    s.len() == SHAPE.len()
        && s.bytes().zip(SHAPE.bytes()).all(|(c, t)| {
            if t == b'0' {
                c.is_ascii_digit()
            } else {
                c == t
            }
        })
}

/// The database's own clock, in [`Ts`]'s text form, for bookkeeping columns
/// (`claimed_at`, `sent_at`, `updated_at`, ...): what PostgreSQL's `now()`
/// is to its SQL. `%f` is seconds with milliseconds; the padding keeps the
/// width.
pub const NOW: &str = "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')";

/// [`NOW`] less `secs` seconds, in the same text form.
pub fn now_less(secs: i64) -> String {
    format!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', '-{secs} seconds') || '000Z')")
}

/// Parses an instant as stored, or says why it is not one.
pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| format!("{s:?} is not an RFC 3339 instant ({e})"))
}

impl From<DateTime<Utc>> for Ts {
    fn from(t: DateTime<Utc>) -> Self {
        Ts(t)
    }
}

impl From<Uuid> for Id {
    fn from(u: Uuid) -> Self {
        Id(u)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(text(self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let s = <&str as Decode<Sqlite>>::decode(value)?;
        parse(s).map(Ts).map_err(Into::into)
    }
}

impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Id {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let s = <&str as Decode<Sqlite>>::decode(value)?;
        Uuid::parse_str(s)
            .map(Id)
            .map_err(|e| format!("{s:?} is not a UUID ({e})").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_fixed_width_and_sort_as_time() {
        let a = DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .to_utc();
        let b = a + chrono::Duration::microseconds(1);
        assert_eq!(text(a), "2026-11-28T10:00:00.000000Z");
        assert_eq!(text(a).len(), text(b).len());
        assert!(text(a) < text(b));
        assert_eq!(parse(&text(b)), Ok(b));
        assert_eq!(parse("2026-11-28T12:00:00+02:00"), Ok(a));
        assert!(parse("soon").is_err());
    }

    #[test]
    fn the_glob_pattern_matches_the_text_form_and_only_it() {
        let glob: String = SHAPE
            .chars()
            .map(|c| {
                if c == '0' {
                    "[0-9]".into()
                } else {
                    c.to_string()
                }
            })
            .collect();
        assert_eq!(GLOB, format!("'{glob}'"));
        let t = DateTime::parse_from_rfc3339("2026-11-28T10:00:00.25Z")
            .unwrap()
            .to_utc();
        assert!(is_canonical(&text(t)));
        for odd in [
            "2026-11-28T12:00:00+02:00",
            "2026-11-28T10:00:00Z",
            "2026-11-28 10:00:00.000000Z",
            "infinity",
        ] {
            assert!(!is_canonical(odd), "{odd}");
        }
        let far = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::days(1);
        assert!(!is_canonical(&text(far)), "{}", text(far));
        let migration = include_str!("../../../migrations/sqlite/0009_unordered_instants.sql");
        assert!(migration.contains(GLOB), "the index's pattern is this one");
    }
}
