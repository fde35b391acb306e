//! UTC hours and days as numbers since the Unix epoch, and their names (`YYYY-MM-DD-HH`,
//! `YYYY-MM-DD`). Leap seconds do not exist in Unix time, so every day has 24 hours of 3,600
//! seconds and the arithmetic is exact.

use std::time::{SystemTime, UNIX_EPOCH};

/// Hours since the Unix epoch, UTC.
pub(crate) type Hour = u64;

/// Days since the Unix epoch, UTC.
pub(crate) type Day = u64;

/// The current UTC hour, from the wall clock.
pub(crate) fn current_hour() -> Hour {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 3600)
}

/// The day an hour belongs to.
pub(crate) fn day_of(hour: Hour) -> Day {
    hour / 24
}

/// `YYYY-MM-DD-HH`.
pub(crate) fn hour_name(hour: Hour) -> String {
    format!("{}-{:02}", day_name(day_of(hour)), hour % 24)
}

/// `YYYY-MM-DD`.
pub(crate) fn day_name(day: Day) -> String {
    let (year, month, day) = civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian date of `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>), for days on
/// or after the epoch.
///
/// Days are counted from 0000-03-01, so that the leap day ends a year: an era is 400 years
/// (146,097 days), a year of an era starts in March, and a month's first day of the
/// March-based year is `(153 * m + 2) / 5`.
fn civil_from_days(days: Day) -> (u64, u64, u64) {
    // 719,468 days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let march_month = (5 * day_of_year + 2) / 153; // [0, 11], March is 0
    let day = day_of_year - (153 * march_month + 2) / 5 + 1; // [1, 31]
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hours since the epoch of a UTC date and hour, counted the slow way.
    fn hour_at(year: u64, month: u64, day: u64, hour: u64) -> Hour {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let mut days = (1970..year)
            .map(|y| if leap(y) { 366 } else { 365 })
            .sum::<u64>();
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        days += lengths[..(month - 1) as usize].iter().sum::<u64>() + day - 1;
        days * 24 + hour
    }

    #[test]
    fn known_dates() {
        assert_eq!(hour_name(0), "1970-01-01-00");
        assert_eq!(day_name(0), "1970-01-01");
        // 2001-09-09T01:46:40Z is Unix time 1,000,000,000.
        assert_eq!(hour_name(1_000_000_000 / 3600), "2001-09-09-01");
        // 2038-01-19T03:14:07Z, the last second of 32-bit time.
        assert_eq!(hour_name(2_147_483_647 / 3600), "2038-01-19-03");
        assert_eq!(day_name(19_723), "2024-01-01");
    }

    #[test]
    fn leap_years() {
        assert_eq!(day_name(day_of(hour_at(2024, 2, 29, 0))), "2024-02-29");
        assert_eq!(day_name(day_of(hour_at(2024, 2, 29, 0)) + 1), "2024-03-01");
        assert_eq!(day_name(day_of(hour_at(2023, 2, 28, 0)) + 1), "2023-03-01");
        // 2000 is a leap year (divisible by 400), 2100 is not (by 100 only).
        assert_eq!(day_name(day_of(hour_at(2000, 2, 28, 0)) + 1), "2000-02-29");
        assert_eq!(day_name(day_of(hour_at(2100, 2, 28, 0)) + 1), "2100-03-01");
        assert_eq!(day_name(day_of(hour_at(2024, 12, 31, 0))), "2024-12-31");
        assert_eq!(day_name(day_of(hour_at(2024, 12, 31, 0)) + 1), "2025-01-01");
    }

    #[test]
    fn hour_boundaries() {
        let midnight = hour_at(2025, 1, 1, 0);
        assert_eq!(hour_name(midnight - 1), "2024-12-31-23");
        assert_eq!(hour_name(midnight), "2025-01-01-00");
        assert_eq!(day_of(midnight - 1) + 1, day_of(midnight));
        assert_eq!(hour_name(hour_at(2025, 6, 30, 23) + 1), "2025-07-01-00");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_one_before() {
        let mut previous = civil_from_days(0);
        for day in 1..146_097 {
            let (y, m, d) = civil_from_days(day);
            let next_day = (y, m, d) == (previous.0, previous.1, previous.2 + 1);
            let next_month = (y, m, d) == (previous.0, previous.1 + 1, 1);
            let next_year = (y, m, d) == (previous.0 + 1, 1, 1);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} then {:?}",
                (y, m, d)
            );
            previous = (y, m, d);
        }
        assert_eq!(previous, (2369, 12, 31));
        assert_eq!(
            day_name(day_of(hour_at(2369, 12, 31, 5))),
            "2369-12-31",
            "the slow count agrees after 400 years"
        );
    }
}
