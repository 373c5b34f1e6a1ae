//! Calendar-aligned windows (Kong's `timestamp.get_timestamps`): seconds, minutes, hours and
//! days are aligned on the UTC epoch; months and years start on the 1st at 00:00 UTC.

use portico_common::plugins::rate_limiting::Period;

/// Where `now` falls in one period's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The window's number since the epoch (months since 1970-01, ...): consecutive windows
    /// have consecutive numbers, so "the previous window" is `index - 1`.
    pub index: u64,
    /// Start of the window, Unix milliseconds (part of Kong's counter key).
    pub start_ms: u64,
    /// Start of the previous window, Unix milliseconds.
    pub prev_start_ms: u64,
    /// Length of the window in milliseconds (a month is 28 to 31 days).
    pub len_ms: u64,
    /// Milliseconds of the window already gone.
    pub elapsed_ms: u64,
}

impl Window {
    /// The window of `period` holding `now_ms`.
    pub fn at(period: Period, now_ms: u64) -> Window {
        let fixed = |len_s: u64| {
            let len_ms = len_s * 1000;
            let index = now_ms / len_ms;
            let start_ms = index * len_ms;
            Window {
                index,
                start_ms,
                prev_start_ms: start_ms.saturating_sub(len_ms),
                len_ms,
                elapsed_ms: now_ms - start_ms,
            }
        };
        match period {
            Period::Second => fixed(1),
            Period::Minute => fixed(60),
            Period::Hour => fixed(3600),
            Period::Day => fixed(86_400),
            Period::Month | Period::Year => {
                let (y, m, _) = civil_from_days((now_ms / 86_400_000) as i64);
                let (index, start, next, prev) = if period == Period::Month {
                    let index = (y - 1970) * 12 + (m as i64 - 1);
                    (
                        index,
                        month_start(index),
                        month_start(index + 1),
                        month_start(index - 1),
                    )
                } else {
                    let index = y - 1970;
                    let at = |i: i64| days_from_civil(1970 + i, 1, 1) as u64 * 86_400_000;
                    (index, at(index), at(index + 1), at(index - 1))
                };
                Window {
                    index: index.max(0) as u64,
                    start_ms: start,
                    prev_start_ms: prev,
                    len_ms: next - start,
                    elapsed_ms: now_ms.saturating_sub(start),
                }
            }
        }
    }

    /// Whole seconds until the next window, at least 1 (Kong's `RateLimit-Reset`:
    /// `max(1, window − floor(elapsed))`).
    pub fn reset_secs(&self) -> u64 {
        (self.len_ms / 1000)
            .saturating_sub(self.elapsed_ms / 1000)
            .max(1)
    }

    /// How much of the previous window a sliding window still covers, as a fraction of
    /// `PRECISION` (integer maths: the same answer on every node and in Redis).
    pub fn prev_weight(&self) -> u64 {
        PRECISION * (self.len_ms - self.elapsed_ms.min(self.len_ms)) / self.len_ms.max(1)
    }
}

/// The denominator of [`Window::prev_weight`].
pub const PRECISION: u64 = 1_000_000;

/// The estimated count of a sliding window: `current + floor(previous × weight)`.
pub fn sliding(current: u64, previous: u64, weight: u64) -> u64 {
    let carried = (u128::from(previous) * u128::from(weight) / u128::from(PRECISION)) as u64;
    current.saturating_add(carried)
}

/// A generous upper bound of a period's window, in seconds: what an idle counter must outlive
/// (its own window plus the next, where a sliding window still reads it).
pub fn nominal_secs(period: Period) -> u64 {
    match period {
        Period::Second => 1,
        Period::Minute => 60,
        Period::Hour => 3600,
        Period::Day => 86_400,
        Period::Month => 31 * 86_400,
        Period::Year => 366 * 86_400,
    }
}

fn month_start(index: i64) -> u64 {
    let y = 1970 + index.div_euclid(12);
    let m = index.rem_euclid(12) as u32 + 1;
    days_from_civil(y, m, 1).max(0) as u64 * 86_400_000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_windows() {
        // 2024-02-29T12:34:56.789Z
        let now = 1_709_210_096_789;
        let w = Window::at(Period::Minute, now);
        assert_eq!(w.start_ms, 1_709_210_040_000);
        assert_eq!(w.reset_secs(), 4);
        let m = Window::at(Period::Month, now);
        assert_eq!(m.start_ms, 1_706_745_600_000); // 2024-02-01
        assert_eq!(m.len_ms, 29 * 86_400_000);
        assert_eq!(m.prev_start_ms, 1_704_067_200_000); // 2024-01-01
        let y = Window::at(Period::Year, now);
        assert_eq!(y.start_ms, 1_704_067_200_000);
        assert_eq!(y.len_ms, 366 * 86_400_000);
        assert_eq!(y.index, 54);
        assert_eq!(Window::at(Period::Second, now).reset_secs(), 1);
        assert_eq!(sliding(3, 10, PRECISION / 4), 5);
    }
}
