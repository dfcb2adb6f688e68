//! Goroutines blocked on a channel, select or sync primitive for longer than a threshold.
use super::{Finding, FindingType, Grade, involved};
use crate::state::ProcessState;

/// One `blocked` finding per goroutine blocked on user-level synchronisation for at least
/// `threshold_ns` at `now_ns`. Always `suspect`: an idle worker waiting for work looks the same.
pub fn blocked(state: &ProcessState, now_ns: u64, threshold_ns: u64) -> Vec<Finding> {
    let mut found: Vec<Finding> = state
        .goroutines()
        .filter_map(|g| {
            let wait = g.wait.as_ref()?;
            let waited = now_ns.saturating_sub(g.since_ns);
            (wait.class.is_user_blocking() && waited >= threshold_ns).then(|| {
                let reason = state.reasons().name(wait.reason_code).unwrap_or("unknown").to_owned();
                Finding {
                    id: format!("blocked:{}:{}", state.pid, g.goid),
                    finding_type: FindingType::Blocked,
                    grade: Grade::Suspect,
                    pid: state.pid,
                    summary: format!(
                        "goroutine {} blocked in {reason} for {}{:.1}s",
                        g.goid,
                        if g.since_is_lower_bound { "at least " } else { "" },
                        waited as f64 / 1e9
                    ),
                    goroutines: vec![involved(state, g, now_ns)],
                    chain: Vec::new(),
                }
            })
        })
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{events::GoroutineEvent, state::WaitReasons};

    #[test]
    fn only_long_user_level_blocks_are_reported() {
        let mut names = vec![String::new(); 21];
        names[14] = "sleep".into();
        names[19] = "chan receive".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), 104);
        let park = |goid, reason, ts| GoroutineEvent::test_park(ts, goid, reason, 0x1000 + 104);
        st.apply(&park(5, 19, 0));
        st.apply(&park(6, 14, 0)); // sleeping is not blocking on another goroutine
        st.apply(&park(7, 19, 900));
        let f = blocked(&st, 1000, 500);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].goroutines[0].goid, 5);
        assert_eq!(f[0].goroutines[0].channel.as_deref(), Some("0x1000"));
        assert_eq!(f[0].grade, Grade::Suspect);
    }
}
