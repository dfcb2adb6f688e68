//! Channel deadlock chains: goroutines blocked on channels where every goroutine that could still
//! serve each channel is itself blocked in the same set.
//!
//! "Could serve channel X" is judged from evidence: a goroutine whose parked stack holds the
//! value X (it has the channel in a variable) and that is not blocked on X in the same direction
//! (two blocked receivers cannot unblock each other). Only blocked goroutines' stacks are read, so
//! a running goroutine holding X is not seen: findings are graded `suspect`.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Finding, FindingType, Grade, involved};
use crate::state::{Goroutine, ProcessState, WaitClass};

/// Channels each blocked goroutine's stack holds: goid → channel addresses.
pub type Holdings = HashMap<u64, BTreeSet<u64>>;

/// Goroutines blocked on channels for at least `threshold_ns`: the candidates whose stacks the
/// caller reads into [`Holdings`].
pub fn candidates(state: &ProcessState, now_ns: u64, threshold_ns: u64) -> Vec<&Goroutine> {
    state
        .goroutines()
        .filter(|g| now_ns.saturating_sub(g.since_ns) >= threshold_ns)
        .filter(|g| {
            g.wait.as_ref().is_some_and(|w| {
                matches!(w.class, WaitClass::ChanSend | WaitClass::ChanReceive | WaitClass::Select) && !w.channels.is_empty()
            })
        })
        .collect()
}

pub fn deadlocks(state: &ProcessState, now_ns: u64, threshold_ns: u64, holdings: &Holdings) -> Vec<Finding> {
    let blocked: BTreeMap<u64, &Goroutine> = candidates(state, now_ns, threshold_ns)
        .into_iter()
        .filter(|g| holdings.contains_key(&g.goid))
        .map(|g| (g.goid, g))
        .collect();
    // Who could serve each goroutine: per channel it waits on, the other holders of that channel.
    let servers = |g: &Goroutine| -> Vec<BTreeSet<u64>> {
        let Some(wait) = &g.wait else {
            return Vec::new();
        };
        wait.channels
            .iter()
            .map(|&x| {
                blocked
                    .values()
                    .filter(|h| h.goid != g.goid && holdings[&h.goid].contains(&x) && !same_side(g, h, x))
                    .map(|h| h.goid)
                    .collect()
            })
            .collect()
    };
    // Greatest set where every channel of every member has servers, all of them members.
    let mut stuck: BTreeSet<u64> = blocked.keys().copied().collect();
    loop {
        let leaving: Vec<u64> = stuck
            .iter()
            .copied()
            .filter(|goid| servers(blocked[goid]).iter().any(|s| s.is_empty() || !s.is_subset(&stuck)))
            .collect();
        if leaving.is_empty() {
            break;
        }
        for goid in leaving {
            stuck.remove(&goid);
        }
    }
    // One finding per group of mutually waiting goroutines, with one cycle through it as chain.
    let mut findings = Vec::new();
    let mut reported = BTreeSet::new();
    for &start in &stuck {
        if reported.contains(&start) {
            continue;
        }
        let group = reachable(start, &stuck, |g| servers(blocked[&g]).into_iter().flatten().collect());
        reported.extend(group.iter().copied());
        let chain = cycle_from(start, &group, |g| servers(blocked[&g]).into_iter().flatten().collect());
        let goroutines: Vec<_> = group.iter().map(|goid| involved(state, blocked[goid], now_ns)).collect();
        let ids: Vec<String> = group.iter().map(u64::to_string).collect();
        findings.push(Finding {
            id: format!("deadlock:{}:{}", state.pid, ids.join("-")),
            finding_type: FindingType::Deadlock,
            grade: Grade::Suspect,
            pid: state.pid,
            summary: format!(
                "deadlock: goroutines {} wait on channels only the others hold (chain {})",
                ids.join(", "),
                chain.iter().map(|g| format!("g{g}")).collect::<Vec<_>>().join(" -> ")
            ),
            goroutines,
            chain,
        });
    }
    findings
}

/// Both wait on `x` the same way (both send or both receive): neither can complete the other.
fn same_side(g: &Goroutine, h: &Goroutine, x: u64) -> bool {
    let (Some(gw), Some(hw)) = (&g.wait, &h.wait) else {
        return false;
    };
    hw.channels.contains(&x) && gw.class == hw.class && gw.class != WaitClass::Select
}

fn reachable(start: u64, within: &BTreeSet<u64>, next: impl Fn(u64) -> BTreeSet<u64>) -> BTreeSet<u64> {
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(g) = todo.pop() {
        for h in next(g) {
            if within.contains(&h) && seen.insert(h) {
                todo.push(h);
            }
        }
    }
    seen
}

/// A cycle through the group starting at `start`, following the smallest next goid each step,
/// trimmed to start where it first repeats.
fn cycle_from(start: u64, group: &BTreeSet<u64>, next: impl Fn(u64) -> BTreeSet<u64>) -> Vec<u64> {
    let mut path = vec![start];
    let mut at = start;
    loop {
        let Some(&n) = next(at).iter().find(|h| group.contains(h)) else {
            return path;
        };
        if let Some(i) = path.iter().position(|&g| g == n) {
            return path.split_off(i);
        }
        path.push(n);
        at = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{EventDetail, GoroutineEvent},
        state::WaitReasons,
    };

    const LOCK: u32 = 104;

    fn state_with(parks: &[(u64, u8, u64)]) -> ProcessState {
        let mut names = vec![String::new(); 21];
        names[18] = "select".into();
        names[19] = "chan receive".into();
        names[20] = "chan send".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), LOCK);
        for &(goid, reason, chan) in parks {
            st.apply(&GoroutineEvent {
                ts_ns: 0,
                pid: 1,
                tid: 1,
                goid,
                detail: EventDetail::Parked {
                    wait_reason: reason,
                    lock_addr: chan + u64::from(LOCK),
                    g_addr: 0,
                    sema_addr: 0,
                    return_pcs: Default::default(),
                },
            });
        }
        st
    }

    fn holds(h: &[(u64, &[u64])]) -> Holdings {
        h.iter().map(|&(g, c)| (g, c.iter().copied().collect())).collect()
    }

    const A_TO_B: u64 = 0xa000;
    const B_TO_A: u64 = 0xb000;

    #[test]
    fn two_goroutines_each_sending_to_the_other_are_a_deadlock() {
        // A sends on aToB, then would receive bToA; B the mirror image.
        let st = state_with(&[(10, 20, A_TO_B), (11, 20, B_TO_A)]);
        let h = holds(&[(10, &[A_TO_B, B_TO_A]), (11, &[A_TO_B, B_TO_A])]);
        let f = deadlocks(&st, 100, 50, &h);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].finding_type, FindingType::Deadlock);
        assert_eq!(f[0].chain, vec![10, 11]);
        assert_eq!(f[0].goroutines.len(), 2);
        assert_eq!(f[0].goroutines[0].channel.as_deref(), Some("0xa000"));
        // Not yet blocked long enough: nothing.
        assert!(deadlocks(&st, 100, 200, &h).is_empty());
    }

    #[test]
    fn idle_workers_on_one_queue_are_not_a_deadlock() {
        // Three workers blocked receiving from the same job channel: they cannot serve each other;
        // whoever feeds them is not blocked here.
        const JOBS: u64 = 0xc000;
        let st = state_with(&[(1, 19, JOBS), (2, 19, JOBS), (3, 19, JOBS)]);
        let h = holds(&[(1, &[JOBS]), (2, &[JOBS]), (3, &[JOBS])]);
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
    }

    #[test]
    fn a_goroutine_with_a_server_outside_the_stuck_set_is_not_stuck() {
        // A waits for B, B waits on a channel nobody blocked holds (its server may be running).
        let st = state_with(&[(10, 20, A_TO_B), (11, 20, B_TO_A)]);
        let h = holds(&[(10, &[A_TO_B]), (11, &[A_TO_B, B_TO_A])]);
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
    }

    #[test]
    fn a_three_cycle_is_reported_once_with_its_chain() {
        const X: u64 = 0x1000;
        const Y: u64 = 0x2000;
        const Z: u64 = 0x3000;
        // 1 sends X (2 holds X), 2 sends Y (3 holds Y), 3 sends Z (1 holds Z).
        let st = state_with(&[(1, 20, X), (2, 20, Y), (3, 20, Z)]);
        let h = holds(&[(1, &[X, Z]), (2, &[X, Y]), (3, &[Y, Z])]);
        let f = deadlocks(&st, 100, 50, &h);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].chain, vec![1, 2, 3]);
    }
}
