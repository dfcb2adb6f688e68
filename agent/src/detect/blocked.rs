//! Goroutines blocked on a channel, select or sync primitive for longer than a threshold.
//!
//! Left out, because they are waiting as designed: the runtime's own goroutines (no frame outside
//! the runtime, e.g. `runtime.ensureSigM.func1`, which every program with `signal.Notify` has),
//! and waits that include a timer's channel (a `time.Ticker` loop: the timer wakes it).
use super::{Finding, FindingKey, FindingType, Grade, involved};
use crate::model::state::{ProcessState, Wait};

/// Element type of the channels the runtime makes for `time.Timer`, `time.Ticker` and
/// `time.After` (`make(chan Time, 1)` in `time.NewTimer`/`NewTicker`, every release).
const TIMER_ELEMENT: &str = "time.Time";

/// A wait as designed: a runtime goroutine, or a wait a timer will end.
fn waits_by_design(state: &ProcessState, wait: &Wait) -> bool {
    let runtime_only =
        wait.park_site.is_none() && !wait.stack.is_empty() && wait.stack.iter().all(|f| f.function.starts_with("runtime."));
    let timer = wait
        .channels
        .iter()
        .filter_map(|&c| state.channel(c))
        .any(|c| c.capacity == Some(1) && c.element_type.as_deref() == Some(TIMER_ELEMENT));
    runtime_only || timer
}

/// One `blocked` finding per goroutine blocked on user-level synchronisation for at least
/// `threshold_ns` at `now_ns`. Always `suspect`: an idle worker waiting for work looks the same.
pub fn blocked(state: &ProcessState, now_ns: u64, threshold_ns: u64) -> Vec<Finding> {
    let mut found: Vec<Finding> = state
        .goroutines()
        .filter_map(|g| {
            let wait = g.wait.as_ref()?;
            let waited = now_ns.saturating_sub(g.since_ns);
            (wait.class.is_user_blocking() && waited >= threshold_ns && !waits_by_design(state, wait)).then(|| {
                let reason = state.reasons().name(wait.reason_code).unwrap_or("unknown").to_owned();
                Finding {
                    id: FindingKey::Blocked { pid: state.pid, goid: g.goid },
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
    use crate::model::{
        Location,
        events::GoroutineEvent,
        state::{WaitClass, WaitReasons},
    };

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

    #[test]
    fn runtime_goroutines_and_timer_waits_are_not_blocked() {
        let mut names = vec![String::new(); 21];
        names[18] = "select".into();
        names[19] = "chan receive".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), 104);
        let site = |function: &str| Location::new(function, "x.go", 1);
        // 5: runtime.ensureSigM.func1, all runtime frames; 6: a ticker loop; 7: a user receive.
        for (goid, chan) in [(5, 0x1000), (6, 0x2000), (7, 0x3000)] {
            st.apply(&GoroutineEvent::test_park(0, goid, 19, chan + 104));
        }
        st.enrich_wait(
            5,
            WaitClass::ChanReceive,
            &[],
            None,
            vec![site("runtime.gopark"), site("runtime.selectgo"), site("runtime.ensureSigM.func1")],
        );
        st.set_channel_info(0x2000, 1, false, Some("time.Time".into()));
        st.enrich_wait(7, WaitClass::ChanReceive, &[], None, vec![site("runtime.gopark"), site("main.worker")]);
        let f = blocked(&st, 1000, 500);
        assert_eq!(f.iter().map(|f| f.goroutines[0].goid).collect::<Vec<_>>(), vec![7]);
    }
}
