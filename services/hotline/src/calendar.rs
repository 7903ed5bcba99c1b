//! The working-day calendar: weekdays work, weekends rest, except for the
//! public holidays and the adjusted working weekends (调休) each year's
//! file lists.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone, Timelike, Weekday};

use crate::{Error, Result};

/// China Standard Time, in which the hotline's days begin and end.
pub fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// `ms` (Unix milliseconds) in Beijing time, formatted with chrono's `format`.
pub fn beijing(ms: Option<i64>, format: &str) -> Option<String> {
    ms.and_then(DateTime::from_timestamp_millis).map(|t| t.with_timezone(&china()).format(format).to_string())
}

/// The calendar of 2026 shipped with CivicHub; later years are added as files.
pub const CN_2026: &str = include_str!("../calendar/cn-2026.txt");

/// How a listed day differs from the weekly rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayKind {
    /// A public holiday: no work even on a weekday.
    Holiday,
    /// An adjusted working day: work even on a weekend.
    Workday,
}

/// A time limit: working days on the calendar, or plain hours around the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Working days: the same time of day on the n-th following working day.
    WorkingDays(u32),
    /// Hours around the clock (emergencies).
    Hours(u32),
}

/// Working days and rest days.
#[derive(Clone, Debug, Default)]
pub struct Calendar {
    days: HashMap<NaiveDate, DayKind>,
}

impl Calendar {
    /// The calendar of the files shipped with CivicHub.
    pub fn builtin() -> Calendar {
        Calendar::parse(CN_2026).expect("the built-in calendar parses")
    }

    /// Reads a calendar file: one `YYYY-MM-DD holiday|workday [note]` per
    /// line; blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Calendar> {
        let mut cal = Calendar::default();
        cal.add(text)?;
        Ok(cal)
    }

    /// Adds the days of another file (a later year); a day listed again takes the new kind.
    pub fn add(&mut self, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| Error::Calendar(format!("line {}: {why}: {line:?}", i + 1));
            let mut parts = line.split_whitespace();
            let date = parts.next().ok_or_else(|| bad("no date"))?;
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad("the date is not YYYY-MM-DD"))?;
            let kind = match parts.next() {
                Some("holiday") => DayKind::Holiday,
                Some("workday") => DayKind::Workday,
                _ => return Err(bad("the kind must be holiday or workday")),
            };
            self.days.insert(date, kind);
        }
        Ok(())
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        match self.days.get(&date) {
            Some(DayKind::Holiday) => false,
            Some(DayKind::Workday) => true,
            None => !matches!(date.weekday(), Weekday::Sat | Weekday::Sun),
        }
    }

    /// The first working day after `date`.
    pub fn next_working_day(&self, date: NaiveDate) -> NaiveDate {
        let mut d = date;
        // Chinese holidays with their weekends last at most ten days or so.
        for _ in 0..366 {
            d = d.succ_opt().unwrap_or(d);
            if self.is_working_day(d) {
                return d;
            }
        }
        d
    }

    /// When a limit that starts at `start` (Unix milliseconds) runs out.
    ///
    /// Working days keep the time of day: dispatched on Friday at 15:00 with
    /// one working day, due on Monday at 15:00 (Tuesday if Monday is a
    /// holiday). A start on a rest day counts from 00:00 of the next
    /// working day, so one working day from Saturday ends with Monday.
    pub fn deadline(&self, start_ms: i64, limit: Limit) -> i64 {
        let tz = china();
        let Some(start) = DateTime::from_timestamp_millis(start_ms) else { return start_ms };
        let start = start.with_timezone(&tz);
        match limit {
            Limit::Hours(h) => start_ms + i64::from(h) * 3_600_000,
            Limit::WorkingDays(n) => {
                let (mut date, time) = if self.is_working_day(start.date_naive()) {
                    (start.date_naive(), start.time())
                } else {
                    (self.next_working_day(start.date_naive()), NaiveTime::MIN)
                };
                for _ in 0..n {
                    date = self.next_working_day(date);
                }
                match tz.from_local_datetime(&date.and_time(time)).single() {
                    Some(t) => t.timestamp_millis(),
                    None => start_ms + i64::from(n) * Duration::days(1).num_milliseconds(),
                }
            }
        }
    }

    /// Working days from `from` to `to` (Unix milliseconds), in fractions
    /// of a day: the average handling time of the dashboard.
    pub fn working_days_between(&self, from_ms: i64, to_ms: i64) -> f64 {
        if to_ms <= from_ms {
            return 0.0;
        }
        let tz = china();
        let (Some(from), Some(to)) = (DateTime::from_timestamp_millis(from_ms), DateTime::from_timestamp_millis(to_ms)) else {
            return 0.0;
        };
        let (from, to) = (from.with_timezone(&tz), to.with_timezone(&tz));
        let mut total = 0.0;
        let mut date = from.date_naive();
        while date <= to.date_naive() {
            if self.is_working_day(date) {
                let begin = if date == from.date_naive() { from.time() } else { NaiveTime::MIN };
                let end_secs = if date == to.date_naive() { f64::from(to.time().num_seconds_from_midnight()) } else { 86_400.0 };
                total += (end_secs - f64::from(begin.num_seconds_from_midnight())).max(0.0) / 86_400.0;
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => break,
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).expect("time").timestamp_millis()
    }

    fn show(ms: i64) -> String {
        DateTime::from_timestamp_millis(ms).expect("ms").with_timezone(&china()).format("%Y-%m-%d %H:%M").to_string()
    }

    const FIXTURE: &str = "# National Day 2026\n\
        2026-09-20 workday adjusted Sunday\n\
        2026-10-01 holiday\n2026-10-02 holiday\n2026-10-03 holiday\n2026-10-04 holiday\n\
        2026-10-05 holiday\n2026-10-06 holiday\n2026-10-07 holiday\n\
        2026-10-10 workday adjusted Saturday\n";

    #[test]
    fn weekends_rest_and_weekdays_work() {
        let cal = Calendar::default();
        assert!(cal.is_working_day(NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()), "a Friday");
        assert!(!cal.is_working_day(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()), "a Saturday");
        let cal = Calendar::parse(FIXTURE).unwrap();
        assert!(!cal.is_working_day(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()), "a Thursday holiday");
        assert!(cal.is_working_day(NaiveDate::from_ymd_opt(2026, 10, 10).unwrap()), "an adjusted Saturday");
        assert!(cal.is_working_day(NaiveDate::from_ymd_opt(2026, 9, 20).unwrap()), "an adjusted Sunday");
    }

    #[test]
    fn working_days_skip_weekends() {
        let cal = Calendar::default();
        // Friday 15:00 + 1 working day = Monday 15:00.
        assert_eq!(show(cal.deadline(at("2026-11-27T15:00:00+08:00"), Limit::WorkingDays(1))), "2026-11-30 15:00");
        // Saturday counts from Monday 00:00: one working day ends with Monday.
        assert_eq!(show(cal.deadline(at("2026-11-28T10:00:00+08:00"), Limit::WorkingDays(1))), "2026-12-01 00:00");
        assert_eq!(show(cal.deadline(at("2026-11-25T09:30:00+08:00"), Limit::WorkingDays(5))), "2026-12-02 09:30");
    }

    #[test]
    fn holidays_and_adjusted_weekends_count_as_the_calendar_says() {
        let cal = Calendar::parse(FIXTURE).unwrap();
        // Wednesday 30 September 10:00 + 1: the holiday week and its weekend are skipped,
        // Thursday 8 October is the next working day.
        assert_eq!(show(cal.deadline(at("2026-09-30T10:00:00+08:00"), Limit::WorkingDays(1))), "2026-10-08 10:00");
        // Friday 9 October + 1 = Saturday 10 October, an adjusted working day.
        assert_eq!(show(cal.deadline(at("2026-10-09T16:00:00+08:00"), Limit::WorkingDays(1))), "2026-10-10 16:00");
        // Saturday 19 September (rest) + 1: counts from Sunday 20 September (working) 00:00.
        assert_eq!(show(cal.deadline(at("2026-09-19T12:00:00+08:00"), Limit::WorkingDays(1))), "2026-09-21 00:00");
        // Hours run through holidays.
        assert_eq!(show(cal.deadline(at("2026-10-01T08:00:00+08:00"), Limit::Hours(2))), "2026-10-01 10:00");
        // A ticket dispatched on a holiday: 13 working days from 8 October 00:00.
        assert_eq!(show(cal.deadline(at("2026-10-03T12:00:00+08:00"), Limit::WorkingDays(13))), "2026-10-26 00:00");
    }

    #[test]
    fn handling_time_counts_working_days_only() {
        let cal = Calendar::parse(FIXTURE).unwrap();
        // Wednesday 30 September 12:00 → Thursday 8 October 12:00: half of the 30th and half
        // of the 8th; the seven days between are the holiday week.
        let days = cal.working_days_between(at("2026-09-30T12:00:00+08:00"), at("2026-10-08T12:00:00+08:00"));
        assert!((days - 1.0).abs() < 1e-9, "{days}");
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = Calendar::parse("2026-10-01 holiday\n2026-13-01 holiday\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = Calendar::parse("2026-10-01 vacation\n").unwrap_err().to_string();
        assert!(err.contains("holiday or workday"), "{err}");
    }

    #[test]
    fn the_builtin_calendar_knows_2026() {
        let cal = Calendar::builtin();
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert!(!cal.is_working_day(d(2, 17)), "Spring Festival");
        assert!(cal.is_working_day(d(2, 14)), "adjusted Saturday before the Spring Festival");
        assert!(!cal.is_working_day(d(10, 1)), "National Day");
        assert!(cal.is_working_day(d(10, 10)), "adjusted Saturday after National Day");
    }
}
