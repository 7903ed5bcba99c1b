//! Ticket numbers: `12345-YYYYMMDD-NNNNNN`, the day in Beijing time and a
//! sequence that restarts every day.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::Error;

/// A ticket number, parsed at the edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TicketNumber {
    day: NaiveDate,
    seq: u32,
}

impl TicketNumber {
    /// The `seq`-th ticket of `day`.
    pub fn new(day: NaiveDate, seq: u32) -> Result<TicketNumber, Error> {
        if seq == 0 || seq > 999_999 {
            return Err(Error::Invalid(format!("ticket sequence {seq} is outside 1–999999")));
        }
        Ok(TicketNumber { day, seq })
    }

    /// The day's key as stored: `YYYYMMDD`.
    pub fn day_key(day: NaiveDate) -> String {
        day.format("%Y%m%d").to_string()
    }
}

impl fmt::Display for TicketNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "12345-{}-{:06}", self.day.format("%Y%m%d"), self.seq)
    }
}

impl FromStr for TicketNumber {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Invalid(format!("{s:?} is not a ticket number (12345-YYYYMMDD-NNNNNN)"));
        let rest = s.strip_prefix("12345-").ok_or_else(bad)?;
        let (day, seq) = rest.split_once('-').ok_or_else(bad)?;
        // Digits only: chrono's parser would skip a space inside the date.
        if day.len() != 8 || seq.len() != 6 || !day.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let day = NaiveDate::parse_from_str(day, "%Y%m%d").map_err(|_| bad())?;
        TicketNumber::new(day, seq.parse().map_err(|_| bad())?).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_bad_ones_are_refused() {
        let n: TicketNumber = "12345-20261128-000042".parse().unwrap();
        assert_eq!(n.to_string(), "12345-20261128-000042");
        for bad in ["12345-20261328-000001", "12345-20261128-42", "12346-20261128-000001", "12345-20261128-000000", "12345-20261128-00004x", "12345-202611 8-000042", "12345- 2026118-000042", ""] {
            assert!(bad.parse::<TicketNumber>().is_err(), "{bad}");
        }
    }
}
