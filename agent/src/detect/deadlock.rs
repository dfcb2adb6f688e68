//! Deadlock chains on channels and locks: goroutines blocked where every goroutine that could
//! still serve what each waits on is itself blocked in the same set.
//!
//! "Could serve object X" (a channel, or a Mutex/RWMutex it could unlock) is judged from evidence:
//! a goroutine whose parked stack, or a package-level variable its code uses, refers to X, and
//! that is not blocked on X the same way (two blocked receivers, or two goroutines waiting to lock
//! X, cannot unblock each other). Only blocked goroutines' stacks are read, so a running goroutine
//! holding X is not seen: findings are graded `suspect`. This judges what reachability cannot
//! prove: locks in package-level variables are reachable by every goroutine.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Finding, FindingKey, FindingType, Grade, graph, involved};
use crate::model::state::{Goroutine, ProcessState, Wait, WaitClass};

/// Objects (from [`wait_objects`]) each blocked goroutine refers to: goid → addresses.
pub type Holdings = HashMap<u64, BTreeSet<u64>>;

/// What a wait can be served through: its channels, or the lock it waits to take.
pub fn wait_objects(w: &Wait) -> Vec<u64> {
    match w.class {
        WaitClass::ChanSend | WaitClass::ChanReceive | WaitClass::Select => w.channels.clone(),
        WaitClass::Mutex | WaitClass::RWMutexRead | WaitClass::RWMutexWrite => w.lock.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Goroutines blocked on channels or locks for at least `threshold_ns`: the candidates whose
/// stacks the caller reads into [`Holdings`].
pub fn candidates(state: &ProcessState, now_ns: u64, threshold_ns: u64) -> Vec<&Goroutine> {
    state
        .goroutines()
        .filter(|g| now_ns.saturating_sub(g.since_ns) >= threshold_ns)
        .filter(|g| g.wait.as_ref().is_some_and(|w| !wait_objects(w).is_empty()))
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
        wait_objects(wait)
            .into_iter()
            .map(|x| {
                blocked
                    .values()
                    .filter(|h| h.goid != g.goid && holdings[&h.goid].contains(&x) && !same_side(g, h, x))
                    .map(|h| h.goid)
                    .collect()
            })
            .collect()
    };
    // Greatest set where every object of every member has servers, all of them members.
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
    // One finding per group of goroutines connected by waiting (a cycle and those stuck behind
    // it), with one cycle through it as chain.
    let waits_for: BTreeMap<u64, BTreeSet<u64>> =
        stuck.iter().map(|&g| (g, servers(blocked[&g]).into_iter().flatten().collect())).collect();
    let mut either_way = waits_for.clone();
    for (&g, hs) in &waits_for {
        for &h in hs {
            either_way.entry(h).or_default().insert(g);
        }
    }
    let mut findings = Vec::new();
    let mut reported = BTreeSet::new();
    for &start in &stuck {
        if reported.contains(&start) {
            continue;
        }
        let mut group = graph::reachable(start, &either_way);
        group.insert(start);
        reported.extend(group.iter().copied());
        let chain = graph::cycle_from(&graph::reachable(start, &waits_for), &waits_for);
        let goroutines: Vec<_> = group.iter().map(|goid| involved(state, blocked[goid], now_ns)).collect();
        let ids: Vec<String> = group.iter().map(u64::to_string).collect();
        findings.push(Finding {
            id: FindingKey::Deadlock { pid: state.pid, goroutines: group.iter().copied().collect() },
            finding_type: FindingType::Deadlock,
            grade: Grade::Suspect,
            pid: state.pid,
            summary: format!(
                "deadlock: goroutines {} wait on channels or locks only the others refer to (chain {})",
                ids.join(", "),
                chain.iter().map(|g| format!("g{g}")).collect::<Vec<_>>().join(" -> ")
            ),
            goroutines,
            chain,
        });
    }
    findings
}

/// Both wait on `x` the same way (both send, both receive, both wait to lock it): neither can
/// complete the other. A blocked reader and a blocked writer of one RWMutex can (the reader may
/// hold a read lock already: the recursive-read deadlock).
fn same_side(g: &Goroutine, h: &Goroutine, x: u64) -> bool {
    let (Some(gw), Some(hw)) = (&g.wait, &h.wait) else {
        return false;
    };
    wait_objects(hw).contains(&x) && gw.class == hw.class && gw.class != WaitClass::Select
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{events::GoroutineEvent, state::WaitReasons};

    const LOCK: u32 = 104;

    fn state_with(parks: &[(u64, u8, u64)]) -> ProcessState {
        let mut names = vec![String::new(); 21];
        names[18] = "select".into();
        names[19] = "chan receive".into();
        names[20] = "chan send".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), LOCK);
        for &(goid, reason, chan) in parks {
            st.apply(&GoroutineEvent::test_park(0, goid, reason, chan + u64::from(LOCK)));
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
    fn lock_order_inversion_and_recursive_read_locks_are_deadlocks_two_lockers_are_not() {
        const M1: u64 = 0x5000;
        const M2: u64 = 0x6000;
        let mut names = vec![String::new(); 24];
        names[21] = "sync.Mutex.Lock".into();
        names[22] = "sync.RWMutex.RLock".into();
        names[23] = "sync.RWMutex.Lock".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), LOCK);
        for (goid, reason, lock) in [(1, 21, M2), (2, 21, M1), (3, 22, M1 + 0x100), (4, 23, M1 + 0x100), (5, 21, M2)] {
            st.apply(&GoroutineEvent::test_park(0, goid, reason, 0x9000));
            st.enrich_wait(goid, WaitClass::Semaphore, &[], Some(lock), Vec::new());
        }
        // 1 holds M1 and waits for M2; 2 holds M2 and waits for M1; 5 also waits for M2 but holds
        // nothing 2 or 1 needs. 3 holds a read lock and waits to read again behind writer 4.
        let h = holds(&[(1, &[M1, M2]), (2, &[M1, M2]), (3, &[M1 + 0x100]), (4, &[M1 + 0x100]), (5, &[M2])]);
        let mut f = deadlocks(&st, 100, 50, &h);
        f.sort_by_key(|f| f.chain.clone());
        assert_eq!(f.iter().map(|f| f.chain.clone()).collect::<Vec<_>>(), vec![vec![1, 2], vec![3, 4]]);
        assert_eq!(f[0].goroutines[0].lock.as_deref(), Some("0x6000"));
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
