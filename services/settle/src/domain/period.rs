//! Settlement periods: calendar months in UTC by default (`YYYY-MM`); days (`YYYY-MM-DD`),
//! hours (`YYYY-MM-DDTHH`) or minutes (`YYYY-MM-DDTHHMM`) for deployments that pay out more
//! often (`settlement.period`; minutes are for demonstrations and tests). A deployment keeps
//! one length: the ids of periods of another length do not parse.

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, TimeZone as _, Timelike as _, Utc};
use serde::{Deserialize, Serialize};

/// How long a settlement period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodLength {
    #[default]
    Month,
    Day,
    Hour,
    Minute,
}

impl PeriodLength {
    /// How its periods' ids are written.
    pub fn format(self) -> &'static str {
        match self {
            PeriodLength::Month => "YYYY-MM",
            PeriodLength::Day => "YYYY-MM-DD",
            PeriodLength::Hour => "YYYY-MM-DDTHH",
            PeriodLength::Minute => "YYYY-MM-DDTHHMM",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            PeriodLength::Month => "%Y-%m",
            PeriodLength::Day => "%Y-%m-%d",
            PeriodLength::Hour => "%Y-%m-%dT%H",
            PeriodLength::Minute => "%Y-%m-%dT%H%M",
        }
    }
}

/// A deployment's periods: their length, and how long after one ends it may be closed (late
/// inference events still land in it meanwhile; after the close they go to the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    pub length: PeriodLength,
    pub close_grace: Duration,
}

impl Periods {
    pub fn containing(&self, instant: DateTime<Utc>) -> Period {
        Period::containing(self.length, instant)
    }

    pub fn parse(&self, text: &str) -> Result<Period, PeriodError> {
        Period::parse(self.length, text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    length: PeriodLength,
    starts_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a period: periods here are written {format} (years 2000 to 9999)")]
pub struct PeriodError {
    pub text: String,
    pub format: &'static str,
}

impl Period {
    /// The period of `length` that holds `instant`.
    pub fn containing(length: PeriodLength, instant: DateTime<Utc>) -> Period {
        let (year, month, day, hour, minute) = (instant.year(), instant.month(), instant.day(), instant.hour(), instant.minute());
        let (day, hour, minute) = match length {
            PeriodLength::Month => (1, 0, 0),
            PeriodLength::Day => (day, 0, 0),
            PeriodLength::Hour => (day, hour, 0),
            PeriodLength::Minute => (day, hour, minute),
        };
        let starts_at = Utc.with_ymd_and_hms(year, month, day, hour, minute, 0).single().unwrap_or(instant);
        Period { length, starts_at }
    }

    /// The period `text` names, written as `length`'s periods are, canonically.
    pub fn parse(length: PeriodLength, text: &str) -> Result<Period, PeriodError> {
        let invalid = || PeriodError { text: text.to_owned(), format: length.format() };
        if !text.is_ascii() || !text.starts_with(|first: char| first.is_ascii_digit()) {
            return Err(invalid());
        }
        // chrono needs a whole date and time: complete the text with the period's start.
        let completed = match length {
            PeriodLength::Month => format!("{text}-01T00:00"),
            PeriodLength::Day => format!("{text}T00:00"),
            PeriodLength::Hour => format!("{text}:00"),
            PeriodLength::Minute if text.len() == 15 => format!("{}:{}", &text[..13], &text[13..]),
            PeriodLength::Minute => return Err(invalid()),
        };
        let parsed = chrono::NaiveDateTime::parse_from_str(&completed, "%Y-%m-%dT%H:%M").map_err(|_| invalid())?;
        let period = Period { length, starts_at: Utc.from_utc_datetime(&parsed) };
        // Only the canonical spelling (two-digit fields, years 2000 to 9999) names a period.
        if period.id() != text || !(2000..=9999).contains(&period.starts_at.year()) {
            return Err(invalid());
        }
        Ok(period)
    }

    /// The period an id names, whatever the length (each length writes its ids differently).
    pub fn from_id(text: &str) -> Option<Period> {
        [PeriodLength::Month, PeriodLength::Day, PeriodLength::Hour, PeriodLength::Minute]
            .into_iter()
            .find_map(|length| Period::parse(length, text).ok())
    }

    pub fn length(&self) -> PeriodLength {
        self.length
    }

    pub fn id(&self) -> String {
        self.starts_at.format(self.length.pattern()).to_string()
    }

    pub fn next(&self) -> Period {
        let starts_at = match self.length {
            PeriodLength::Month => {
                let (year, month) = if self.starts_at.month() == 12 {
                    (self.starts_at.year() + 1, 1)
                } else {
                    (self.starts_at.year(), self.starts_at.month() + 1)
                };
                let day = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
                Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
            }
            PeriodLength::Day => self.starts_at + Duration::days(1),
            PeriodLength::Hour => self.starts_at + Duration::hours(1),
            PeriodLength::Minute => self.starts_at + Duration::minutes(1),
        };
        Period { length: self.length, starts_at }
    }

    /// First instant of the period (inclusive).
    pub fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }

    /// First instant after the period (exclusive end).
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.next().starts_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months_by_default() {
        let november = Period::parse(PeriodLength::Month, "2026-11").expect("valid");
        assert_eq!(november.id(), "2026-11");
        assert_eq!(november.next().id(), "2026-12");
        assert_eq!(november.next().next().id(), "2027-01");
        assert_eq!(november.starts_at().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(november.ends_at().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(Period::containing(PeriodLength::Month, november.ends_at()), november.next());
        for bad in ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "1999-12", "+026-11", "2026-11-01", "", "２０２６-11"] {
            assert!(Period::parse(PeriodLength::Month, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn days_hours_and_minutes_follow_the_same_rules() {
        let instant = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 30).single().expect("instant");
        for (length, id, next) in [
            (PeriodLength::Day, "2026-12-31", "2027-01-01"),
            (PeriodLength::Hour, "2026-12-31T23", "2027-01-01T00"),
            (PeriodLength::Minute, "2026-12-31T2359", "2027-01-01T0000"),
        ] {
            let period = Period::containing(length, instant);
            assert_eq!((period.id(), period.next().id()), (id.to_owned(), next.to_owned()), "{length:?}");
            assert_eq!(Period::parse(length, id), Ok(period));
            assert_eq!(period.ends_at(), period.next().starts_at());
            assert!(period.starts_at() <= instant && instant < period.ends_at());
            assert!(Period::parse(length, "2026-12").is_err(), "a month is not a {length:?}");
            assert_eq!(Period::from_id(id), Some(period));
        }
        for bad in ["2026-12-32", "2026-12-31T24", "2026-12-31T2360", "2026-12-31T23:59", "2026-12-31T235", "2026-12-31t2359"] {
            assert!(Period::parse(PeriodLength::Minute, bad).is_err() && Period::parse(PeriodLength::Hour, bad).is_err(), "{bad:?}");
        }
    }
}
