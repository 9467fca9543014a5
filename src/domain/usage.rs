//! Money from tokens (docs/operations.md §5): the prices tokens are charged at, and the calendar
//! periods budgets and metrics count over (UTC days and months).

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// What a million tokens cost, in US dollars (so also: millionths of a dollar per token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Pricing {
    /// The cost of `input` and `output` tokens in millionths of a dollar, rounded; saturates
    /// rather than wraps, so a hostile count cannot make a spend negative.
    pub fn cost_micro_usd(&self, input: i64, output: i64) -> i64 {
        let cost =
            input.max(0) as f64 * self.input_per_mtok + output.max(0) as f64 * self.output_per_mtok;
        // `as` saturates a float at the integer's bounds.
        cost.round() as i64
    }
}

/// Whole cents from millionths of a dollar, rounding up: a budget is never under-charged.
pub fn micro_usd_to_cents(micro: i64) -> i64 {
    micro.div_euclid(10_000) + i64::from(micro.rem_euclid(10_000) != 0)
}

/// Midnight UTC of `at`'s day.
pub fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), at.day(), 0, 0, 0)
        .single()
        .expect("midnight UTC exists")
}

/// The first instant of `at`'s month and of the next, UTC.
pub fn month_bounds(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    let (year, month) = match at.month() {
        12 => (at.year() + 1, 1),
        month => (at.year(), month + 1),
    };
    let end = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonnet_prices_charge_three_and_fifteen_millionths_a_token() {
        let pricing = Pricing {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
        };
        assert_eq!(pricing.cost_micro_usd(1_000, 100), 4_500);
        assert_eq!(pricing.cost_micro_usd(i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(pricing.cost_micro_usd(-5, 0), 0);
    }

    #[test]
    fn cents_round_up() {
        assert_eq!(micro_usd_to_cents(0), 0);
        assert_eq!(micro_usd_to_cents(1), 1);
        assert_eq!(micro_usd_to_cents(10_000), 1);
        assert_eq!(micro_usd_to_cents(10_001), 2);
    }

    #[test]
    fn december_ends_in_the_next_year() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (start, end) = month_bounds(at);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(
            day_start(at),
            Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap()
        );
    }
}
