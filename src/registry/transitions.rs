//! The heartbeat status rules of docs/registry.md §2.1, as a pure function: given the status
//! read once and this beat, which single transition (if any) to attempt, and its event payload.

use serde_json::{Value, json};

use crate::domain::WorkspaceStatus::{
    self, AwaitingAgent, Degraded, Failed, Hibernated, Hibernating, Offline, Online, Paused,
    Provisioning, Removed,
};

/// What a heartbeat reports that the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct BeatFacts<'a> {
    pub error_rate: f64,
    pub runtime_state: &'a str,
    pub sample_error: &'a str,
    /// The runtime manages its own status (`capabilities.status_mgmt`).
    pub native: bool,
}

/// The one transition this beat causes, evaluated in the documented order.
pub fn evaluate(current: WorkspaceStatus, beat: BeatFacts<'_>) -> Option<(WorkspaceStatus, Value)> {
    let wedged = beat.runtime_state == "wedged";
    match current {
        Online if wedged => Some((
            Degraded,
            json!({"runtime_state": "wedged", "sample_error": beat.sample_error}),
        )),
        Online if !beat.native && beat.error_rate >= 0.5 => Some((
            Degraded,
            json!({"error_rate": beat.error_rate, "sample_error": beat.sample_error}),
        )),
        Degraded if !beat.native && beat.error_rate < 0.1 && beat.runtime_state.is_empty() => {
            Some((Online, json!({})))
        }
        Offline => Some((Online, json!({}))),
        Provisioning | AwaitingAgent => Some((Online, json!({"recovered_from": current.as_str()}))),
        Online | Degraded | Failed | Paused | Hibernating | Hibernated | Removed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(error_rate: f64, runtime_state: &str, native: bool) -> BeatFacts<'_> {
        BeatFacts {
            error_rate,
            runtime_state,
            sample_error: "boom",
            native,
        }
    }

    #[test]
    fn the_rules_in_order() {
        let healthy = beat(0.0, "", false);
        assert_eq!(evaluate(Online, healthy), None);
        // A wedge and a high error rate together: one transition, the wedge's payload.
        assert_eq!(
            evaluate(Online, beat(0.9, "wedged", false)),
            Some((
                Degraded,
                json!({"runtime_state": "wedged", "sample_error": "boom"})
            ))
        );
        assert_eq!(
            evaluate(Online, beat(0.5, "", false)),
            Some((Degraded, json!({"error_rate": 0.5, "sample_error": "boom"})))
        );
        assert_eq!(
            evaluate(Online, beat(0.9, "", true)),
            None,
            "native runtimes manage themselves"
        );
        // Hysteresis: degraded recovers only below 0.1 and without a wedge.
        assert_eq!(evaluate(Degraded, beat(0.2, "", false)), None);
        assert_eq!(evaluate(Degraded, beat(0.05, "wedged", false)), None);
        assert_eq!(
            evaluate(Degraded, beat(0.05, "", false)),
            Some((Online, json!({})))
        );
        // Recovery fires even when this beat reports a wedge; the next one degrades.
        assert_eq!(
            evaluate(Offline, beat(0.0, "wedged", false)),
            Some((Online, json!({})))
        );
        assert_eq!(
            evaluate(Provisioning, healthy),
            Some((Online, json!({"recovered_from": "provisioning"})))
        );
        assert_eq!(
            evaluate(AwaitingAgent, healthy),
            Some((Online, json!({"recovered_from": "awaiting_agent"})))
        );
        for untouched in [Paused, Hibernating, Hibernated, Failed, Removed] {
            assert_eq!(evaluate(untouched, healthy), None, "{untouched}");
        }
    }
}
