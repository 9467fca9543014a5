//! When a schedule runs: its five cron fields (or an `@` macro) read by croner, in its IANA zone
//! (chrono-tz), so runs land on the zone's wall-clock times across daylight-saving changes. It
//! computes instants; it stores and fires nothing.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

/// A parsed schedule: its expression and its zone.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    zone: Tz,
}

/// Why a schedule's timing was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimingError {
    Expression,
    Zone(String),
}

impl Timing {
    /// Five fields (minute hour day-of-month month day-of-week) or a macro (`@hourly`,
    /// `@daily`, `@weekly`, `@monthly`, `@yearly`), in `zone` (an IANA name).
    pub fn parse(expression: &str, zone: &str) -> Result<Self, TimingError> {
        let zone: Tz = zone
            .parse()
            .map_err(|_| TimingError::Zone(zone.to_owned()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|_| TimingError::Expression)?;
        Ok(Self { cron, zone })
    }

    /// The first run strictly after `after`. Vixie cron's rules at a daylight-saving change: a
    /// time the clocks skip runs as the clocks land (02:30 on the spring-forward day runs at
    /// 03:00), a time they repeat runs once, and `*` hours follow elapsed time (an hourly job
    /// runs at both 02:00s).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, day, hour, minute, 0)
            .unwrap()
    }

    /// The next `count` runs after `from`, in UTC "month-day hour:minute".
    fn runs(expression: &str, from: DateTime<Utc>, count: usize) -> Vec<String> {
        let timing = Timing::parse(expression, "Europe/Berlin").unwrap();
        let mut at = from;
        (0..count)
            .map(|_| {
                at = timing.next_after(at).unwrap();
                at.format("%m-%d %H:%M").to_string()
            })
            .collect()
    }

    // Berlin in 2026: CET (UTC+1) until 29 March 02:00, when clocks jump to 03:00 CEST (UTC+2);
    // back to CET on 25 October at 03:00 CEST, which becomes 02:00 CET.

    #[test]
    fn a_daily_run_keeps_its_wall_clock_time_across_both_changes() {
        assert_eq!(
            runs("0 9 * * *", utc(3, 28, 0, 0), 3),
            ["03-28 08:00", "03-29 07:00", "03-30 07:00"],
            "09:00 CET, then 09:00 CEST"
        );
        assert_eq!(
            runs("0 9 * * *", utc(10, 24, 12, 0), 2),
            ["10-25 08:00", "10-26 08:00"]
        );
        assert_eq!(
            runs("@daily", utc(3, 28, 12, 0), 2),
            ["03-28 23:00", "03-29 22:00"],
            "midnight, local"
        );
    }

    #[test]
    fn a_skipped_time_runs_as_the_clocks_land_and_a_repeated_one_runs_once() {
        assert_eq!(
            runs("30 2 * * *", utc(3, 28, 12, 0), 2),
            ["03-29 01:00", "03-30 00:30"],
            "02:30 does not exist on 29 March: 03:00 CEST"
        );
        assert_eq!(
            runs("30 2 * * *", utc(10, 24, 12, 0), 2),
            ["10-25 00:30", "10-26 01:30"],
            "02:30 happens twice on 25 October: once"
        );
    }

    #[test]
    fn hourly_runs_follow_elapsed_time() {
        assert_eq!(
            runs("0 * * * *", utc(10, 24, 22, 30), 4),
            ["10-24 23:00", "10-25 00:00", "10-25 01:00", "10-25 02:00"],
            "01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET"
        );
        assert_eq!(
            runs("0 * * * *", utc(3, 28, 23, 30), 3),
            ["03-29 00:00", "03-29 01:00", "03-29 02:00"],
            "01:00 CET, then 03:00 and 04:00 CEST: no 02:00"
        );
    }

    #[test]
    fn five_fields_or_a_macro_and_a_real_zone() {
        for good in [
            "* * * * *",
            "*/5 9-17 * * MON-FRI",
            "0 0 1 1 *",
            "@hourly",
            "@weekly",
        ] {
            assert!(Timing::parse(good, "UTC").is_ok(), "{good}");
        }
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "@often",
            "* * * * * 2026",
        ] {
            assert_eq!(
                Timing::parse(bad, "UTC").unwrap_err(),
                TimingError::Expression,
                "{bad:?}"
            );
        }
        assert_eq!(
            Timing::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            TimingError::Zone("Mars/Olympus".to_owned())
        );
    }
}
