//! Background loops' heartbeats: each loop notes every pass, so a loop that is stuck without
//! having crashed shows (`GET /admin/liveness`), and readiness fails while the scheduler stalls.
//! It records; it restarts nothing.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

/// The scheduler's name among the loops.
pub const SCHEDULER: &str = "scheduler";

/// A loop is stalled once its last pass is older than this many of its intervals.
const STALL_FACTOR: u32 = 3;
/// ...and never sooner than this: a pass may wait on a slow datastore.
const STALL_FLOOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Supervision {
    loops: Mutex<BTreeMap<&'static str, Beat>>,
}

#[derive(Clone, Copy)]
struct Beat {
    every: Duration,
    at: Instant,
    wall: DateTime<Utc>,
}

/// One loop as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopState {
    pub name: &'static str,
    pub last_tick_at: DateTime<Utc>,
    pub seconds_ago: u64,
    pub stalled: bool,
}

impl Beat {
    fn stalled(&self, now: Instant) -> bool {
        now.duration_since(self.at) > (self.every * STALL_FACTOR).max(STALL_FLOOR)
    }
}

impl Supervision {
    /// Notes a pass of `name`, which passes at least every `every`.
    pub fn tick(&self, name: &'static str, every: Duration) {
        self.loops.lock().expect("supervision poisoned").insert(
            name,
            Beat {
                every,
                at: Instant::now(),
                wall: crate::store::now(),
            },
        );
    }

    /// Whether `name` has not passed for too long (false for a loop that never ran).
    pub fn stalled(&self, name: &str) -> bool {
        self.loops
            .lock()
            .expect("supervision poisoned")
            .get(name)
            .is_some_and(|beat| beat.stalled(Instant::now()))
    }

    /// Every loop, by name.
    pub fn snapshot(&self) -> Vec<LoopState> {
        let now = Instant::now();
        self.loops
            .lock()
            .expect("supervision poisoned")
            .iter()
            .map(|(name, beat)| LoopState {
                name,
                last_tick_at: beat.wall,
                seconds_ago: now.duration_since(beat.at).as_secs(),
                stalled: beat.stalled(now),
            })
            .collect()
    }

    #[cfg(test)]
    fn age(&self, name: &'static str, by: Duration) {
        if let Some(beat) = self.loops.lock().unwrap().get_mut(name) {
            beat.at -= by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_passing_is_stalled() {
        let supervision = Supervision::default();
        assert!(!supervision.stalled(SCHEDULER), "unknown is not stalled");
        supervision.tick(SCHEDULER, Duration::from_secs(1));
        assert!(!supervision.stalled(SCHEDULER));
        supervision.age(SCHEDULER, Duration::from_secs(9));
        assert!(!supervision.stalled(SCHEDULER), "within the floor");
        supervision.age(SCHEDULER, Duration::from_secs(2));
        assert!(supervision.stalled(SCHEDULER));
        assert!(supervision.snapshot()[0].stalled);
        supervision.tick(SCHEDULER, Duration::from_secs(1));
        assert!(!supervision.stalled(SCHEDULER), "passing again");
        supervision.tick("sweeper", Duration::from_secs(60));
        supervision.age("sweeper", Duration::from_secs(150));
        assert!(!supervision.stalled("sweeper"), "three of its minutes");
        assert_eq!(
            supervision
                .snapshot()
                .iter()
                .map(|state| state.name)
                .collect::<Vec<_>>(),
            [SCHEDULER, "sweeper"]
        );
    }
}
