//! Settlement periods: calendar months in UTC, named `YYYY-MM`.

use chrono::{DateTime, Datelike as _, NaiveDate, TimeZone as _, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a period: periods are months written YYYY-MM (2000-01 to 9999-12)")]
pub struct PeriodError(pub String);

impl Period {
    /// The month that holds `instant`.
    pub fn containing(instant: DateTime<Utc>) -> Period {
        Period { year: instant.year(), month: instant.month() }
    }

    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let invalid = || PeriodError(text.to_owned());
        let (year, month) = text.split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 || month.len() != 2 || !year.bytes().chain(month.bytes()).all(|byte| byte.is_ascii_digit()) {
            return Err(invalid());
        }
        let (year, month): (i32, u32) = (year.parse().map_err(|_| invalid())?, month.parse().map_err(|_| invalid())?);
        if !(2000..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(invalid());
        }
        Ok(Period { year, month })
    }

    pub fn id(&self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    pub fn next(&self) -> Period {
        if self.month == 12 { Period { year: self.year + 1, month: 1 } } else { Period { year: self.year, month: self.month + 1 } }
    }

    /// First instant of the period (inclusive).
    pub fn starts_at(&self) -> DateTime<Utc> {
        let day = NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default();
        Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
    }

    /// First instant after the period (exclusive end).
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.next().starts_at()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months() {
        let november = Period::parse("2026-11").expect("valid");
        assert_eq!(november.id(), "2026-11");
        assert_eq!(november.next().id(), "2026-12");
        assert_eq!(november.next().next().id(), "2027-01");
        assert_eq!(november.starts_at().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(november.ends_at().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(Period::containing(november.ends_at()), november.next());
        for bad in ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "1999-12", "+026-11", "2026-11-01", ""] {
            assert!(Period::parse(bad).is_err(), "{bad:?}");
        }
    }
}
