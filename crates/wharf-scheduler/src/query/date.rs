//! `registeredAt` arguments: the four date forms ECS documents, read without a clock.
//!
//! Accepted: `2018-06-18`, `2018-06-18T22:28:28`, `2018-06-18T22:28:28Z`,
//! `2018-06-18T22:28:28+00:00` (any `±HH:MM` offset), each time optionally with a
//! fraction of a second (`.123`). A form without an offset is UTC.

const MILLIS_PER_SECOND: i64 = 1_000;
const MILLIS_PER_DAY: i64 = 86_400 * MILLIS_PER_SECOND;

/// How finely a `registeredAt` argument was written; a registration time is cut to the
/// same precision before comparing, so `registeredAt == 2018-06-18` means "that day".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrecision {
    /// `2018-06-18`
    Day,
    /// `2018-06-18T22:28:28`
    Second,
    /// `2018-06-18T22:28:28.5`
    Millisecond,
}

impl DatePrecision {
    fn unit_ms(self) -> i64 {
        match self {
            Self::Day => MILLIS_PER_DAY,
            Self::Second => MILLIS_PER_SECOND,
            Self::Millisecond => 1,
        }
    }
}

/// A point in time read from a query, with the precision it was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryDate {
    /// Milliseconds since the Unix epoch (UTC).
    pub epoch_ms: i64,
    /// How finely it was written.
    pub precision: DatePrecision,
}

impl QueryDate {
    /// Cuts `epoch_ms` down to this date's precision so the two compare like for like.
    /// The offset only ever applies to second forms, where it is whole minutes, so
    /// truncation stays aligned with the argument.
    pub fn truncate(&self, epoch_ms: i64) -> i64 {
        let unit = self.precision.unit_ms();
        epoch_ms.div_euclid(unit) * unit
    }

    /// Reads one of the documented forms; `None` when the text is none of them or
    /// names an impossible date or time.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let year = digits(bytes, 0, 4)?;
        expect(bytes, 4, b'-')?;
        let month = digits(bytes, 5, 2)?;
        expect(bytes, 7, b'-')?;
        let day = digits(bytes, 8, 2)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let day_ms = days_from_civil(year, month, day) * MILLIS_PER_DAY;
        if bytes.len() == 10 {
            return Some(Self {
                epoch_ms: day_ms,
                precision: DatePrecision::Day,
            });
        }
        expect(bytes, 10, b'T')?;
        let hour = digits(bytes, 11, 2)?;
        expect(bytes, 13, b':')?;
        let minute = digits(bytes, 14, 2)?;
        expect(bytes, 16, b':')?;
        let second = digits(bytes, 17, 2)?;
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let mut position = 19;
        let mut millis = 0;
        let mut precision = DatePrecision::Second;
        if bytes.get(position) == Some(&b'.') {
            let start = position + 1;
            let mut end = start;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return None;
            }
            // Only the first three digits matter at millisecond precision.
            let kept = &text[start..end.min(start + 3)];
            millis = kept.parse::<i64>().ok()? * 10_i64.pow(3 - kept.len() as u32);
            precision = DatePrecision::Millisecond;
            position = end;
        }
        let offset_ms = match bytes.get(position) {
            None => 0,
            Some(b'Z') if bytes.len() == position + 1 => 0,
            Some(&sign @ (b'+' | b'-')) if bytes.len() == position + 6 => {
                let offset_hours = digits(bytes, position + 1, 2)?;
                expect(bytes, position + 3, b':')?;
                let offset_minutes = digits(bytes, position + 4, 2)?;
                if offset_hours > 23 || offset_minutes > 59 {
                    return None;
                }
                let magnitude = (offset_hours * 60 + offset_minutes) * 60 * MILLIS_PER_SECOND;
                if sign == b'+' {
                    magnitude
                } else {
                    -magnitude
                }
            }
            Some(_) => return None,
        };
        let time_ms = ((hour * 60 + minute) * 60 + second) * MILLIS_PER_SECOND + millis;
        Some(Self {
            epoch_ms: day_ms + time_ms - offset_ms,
            precision,
        })
    }
}

fn digits(bytes: &[u8], start: usize, count: usize) -> Option<i64> {
    let slice = bytes.get(start..start + count)?;
    if !slice.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        slice
            .iter()
            .fold(0_i64, |acc, digit| acc * 10 + i64::from(digit - b'0')),
    )
}

fn expect(bytes: &[u8], position: usize, wanted: u8) -> Option<()> {
    (bytes.get(position) == Some(&wanted)).then_some(())
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_documented_form() {
        let day = QueryDate::parse("2018-06-18").unwrap();
        assert_eq!(day.epoch_ms, 1_529_280_000_000);
        assert_eq!(day.precision, DatePrecision::Day);
        let expected = 1_529_360_908_000;
        for form in [
            "2018-06-18T22:28:28",
            "2018-06-18T22:28:28Z",
            "2018-06-18T22:28:28+00:00",
            "2018-06-19T00:28:28+02:00",
            "2018-06-18T20:28:28-02:00",
        ] {
            let date = QueryDate::parse(form).unwrap();
            assert_eq!(date.epoch_ms, expected, "{form}");
            assert_eq!(date.precision, DatePrecision::Second, "{form}");
        }
        let fraction = QueryDate::parse("2018-06-18T22:28:28.25Z").unwrap();
        assert_eq!(fraction.epoch_ms, expected + 250);
        assert_eq!(fraction.precision, DatePrecision::Millisecond);
        assert_eq!(QueryDate::parse("1970-01-01").unwrap().epoch_ms, 0);
        assert_eq!(
            QueryDate::parse("1969-12-31").unwrap().epoch_ms,
            -MILLIS_PER_DAY
        );
    }

    #[test]
    fn rejects_impossible_or_malformed_dates() {
        for bad in [
            "2018-02-30",
            "2019-02-29",
            "2018-13-01",
            "2018-6-18",
            "2018-06-18T24:00:00",
            "2018-06-18T22:28",
            "2018-06-18T22:28:28+0000",
            "2018-06-18T22:28:28.",
            "2018-06-18Z",
            "yesterday",
            "",
        ] {
            assert!(QueryDate::parse(bad).is_none(), "{bad}");
        }
        assert!(QueryDate::parse("2020-02-29").is_some());
    }

    #[test]
    fn truncates_to_the_written_precision() {
        let day = QueryDate::parse("2018-06-18").unwrap();
        assert_eq!(day.truncate(1_529_360_908_123), 1_529_280_000_000);
        assert_eq!(day.truncate(-1), -MILLIS_PER_DAY);
    }
}
