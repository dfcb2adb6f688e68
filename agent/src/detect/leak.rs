//! Proven leaks and deadlocks: goroutines blocked on objects that no goroutine able to run can
//! reach (the reachability analysis of goscope-memory, the same judgement as Go's GC-based
//! goroutine leak profile, made from outside the process). Among them, groups that wait on each
//! other in a cycle are deadlocks; the others are leaks, grouped by where they blocked.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Finding, FindingKey, FindingType, Grade, graph, involved};
use crate::model::{
    Location,
    state::{GoState, Goroutine, ProcessState, WaitClass},
};

/// The goroutine that runs `main.main` (runtime.main is always goroutine 1).
const MAIN_GOID: u64 = 1;

/// What reachability analyses proved about the blocked goroutines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakEvidence {
    /// Goroutines every recent complete analysis found blocked on unreachable objects.
    pub leaked: BTreeSet<u64>,
    /// goid → the leaked goroutines whose wait objects it references: if it ran, it could wake them.
    pub could_wake: HashMap<u64, BTreeSet<u64>>,
    /// When the oldest of those analyses began: a goroutine counts only if it has been blocked
    /// since then, so that it was blocked throughout.
    pub since_ns: u64,
}

impl LeakEvidence {
    /// Keeps only what `newer` (a later complete analysis) confirms.
    pub fn confirmed_by(&self, newer: &LeakEvidence) -> LeakEvidence {
        let leaked: BTreeSet<u64> = self.leaked.intersection(&newer.leaked).copied().collect();
        let could_wake = newer
            .could_wake
            .iter()
            .filter(|(g, _)| leaked.contains(g))
            .map(|(&g, wakes)| (g, wakes.intersection(&leaked).copied().collect()))
            .collect();
        LeakEvidence { leaked, could_wake, since_ns: self.since_ns.min(newer.since_ns) }
    }
}

/// Findings from `evidence` for goroutines still blocked at `now_ns` for at least `threshold_ns`.
/// All are `proven`: the caller passes evidence only from complete analyses.
pub fn proven(state: &ProcessState, now_ns: u64, threshold_ns: u64, evidence: &LeakEvidence) -> Vec<Finding> {
    let mut stuck: BTreeMap<u64, &Goroutine> = evidence
        .leaked
        .iter()
        .filter_map(|goid| state.goroutine(*goid))
        .filter(|g| g.state == GoState::Waiting && g.since_ns <= evidence.since_ns)
        .filter(|g| now_ns.saturating_sub(g.since_ns) >= threshold_ns)
        .filter(|g| g.wait.as_ref().is_some_and(|w| w.class.is_user_blocking()))
        .map(|g| (g.goid, g))
        .collect();
    if stuck.is_empty() {
        return Vec::new();
    }
    // g waits for h when h could wake g.
    let mut waits_for: BTreeMap<u64, BTreeSet<u64>> = stuck.keys().map(|&g| (g, BTreeSet::new())).collect();
    for (h, wakes) in &evidence.could_wake {
        let Some(&waker) = stuck.get(h) else { continue };
        for g in wakes.iter().filter(|g| stuck.get(g).is_some_and(|&g| !same_channel_side(g, waker) && !same_primitive(g, waker)))
        {
            waits_for.entry(*g).or_default().insert(*h);
        }
    }
    if let Some(whole) = whole_process(state, now_ns, &stuck, &waits_for) {
        return vec![whole];
    }
    // `select {}` in main parks it on purpose while other goroutines do the work.
    if stuck.get(&MAIN_GOID).and_then(|g| g.wait.as_ref()).and_then(|w| state.reasons().name(w.reason_code))
        == Some("select (no cases)")
    {
        stuck.remove(&MAIN_GOID);
        waits_for.remove(&MAIN_GOID);
        for hs in waits_for.values_mut() {
            hs.remove(&MAIN_GOID);
        }
    }
    let cycles: Vec<BTreeSet<u64>> = graph::strongly_connected(&waits_for)
        .into_iter()
        .filter(|c| c.len() > 1 || c.iter().any(|g| waits_for[g].contains(g)))
        .collect();
    // Each stuck goroutine outside the cycles joins the first cycle it waits on, however
    // indirectly; the rest are leaks.
    let mut members: Vec<BTreeSet<u64>> = cycles.clone();
    let mut leaks: BTreeMap<(Option<&Location>, u8), Vec<u64>> = BTreeMap::new();
    for &g in stuck.keys().filter(|g| !cycles.iter().any(|c| c.contains(g))) {
        let behind = graph::reachable(g, &waits_for);
        match cycles.iter().position(|c| !c.is_disjoint(&behind)) {
            Some(i) => {
                members[i].insert(g);
            }
            None => {
                let w = stuck[&g].wait.as_ref().expect("stuck goroutines wait");
                leaks.entry((w.site(), w.reason_code)).or_default().push(g);
            }
        }
    }
    let mut findings = Vec::new();
    for (cycle, group) in cycles.iter().zip(&members) {
        let chain = graph::cycle_from(cycle, &waits_for);
        findings.push(deadlock_finding(state, now_ns, &stuck, group, chain, false));
    }
    for ((site, reason), goids) in leaks {
        let reason = state.reasons().name(reason).unwrap_or("unknown");
        let place = site.map_or_else(|| "an unknown site".to_owned(), |s| format!("{} ({}:{})", s.function, s.file, s.line));
        findings.push(Finding {
            id: FindingKey::leak(state.pid, site, reason),
            finding_type: FindingType::Leak,
            grade: Grade::Proven,
            pid: state.pid,
            summary: format!(
                "leak: {} goroutine{} blocked in {reason} at {place}; no goroutine that can still run can reach what {} wait{} on",
                goids.len(),
                if goids.len() == 1 { "" } else { "s" },
                if goids.len() == 1 { "it" } else { "they" },
                if goids.len() == 1 { "s" } else { "" },
            ),
            goroutines: goids.iter().map(|g| involved(state, stuck[g], now_ns)).collect(),
            chain: Vec::new(),
        });
    }
    findings
}

/// `g` and `h` are blocked on one channel the same way (both sending, or both receiving): h's
/// reference to that channel is the one it is stuck on, not a way to wake g. N senders whose
/// reader left, or consumers of a channel nobody closes, are one leak, not a deadlock among
/// themselves. Locks are not judged so: a goroutine waiting on a Mutex may be the one holding it.
fn same_channel_side(g: &Goroutine, h: &Goroutine) -> bool {
    let (Some(gw), Some(hw)) = (&g.wait, &h.wait) else {
        return false;
    };
    g.goid != h.goid
        && matches!(gw.class, WaitClass::ChanSend | WaitClass::ChanReceive)
        && gw.class == hw.class
        && gw.channels.iter().any(|c| hw.channels.contains(c))
}

/// `g` and `h` both wait on one sync primitive (Mutex, RWMutex, WaitGroup, Cond): h's reference
/// to it is the one its own wait needs, not evidence that h holds it. A Mutex has one holder, and
/// Go records none: two goroutines waiting for a lock whose holder returned without unlocking it
/// would otherwise be a "cycle" (a leak, not a deadlock). The cost: a goroutine waiting for a lock
/// it already holds itself (double locking, an RWMutex read lock asked for again behind a waiting
/// writer) is a deadlock memory cannot prove, so it stays a leak.
fn same_primitive(g: &Goroutine, h: &Goroutine) -> bool {
    let (Some(gw), Some(hw)) = (&g.wait, &h.wait) else {
        return false;
    };
    let sync = |c: WaitClass| {
        matches!(c, WaitClass::Mutex | WaitClass::RWMutexRead | WaitClass::RWMutexWrite | WaitClass::WaitGroup | WaitClass::Cond)
    };
    g.goid != h.goid && sync(gw.class) && sync(hw.class) && gw.lock.is_some() && gw.lock == hw.lock
}

/// Every user goroutine is stuck: the process can never make progress again, although timers,
/// I/O or cgo keep the runtime from noticing. `None` unless that holds.
fn whole_process(
    state: &ProcessState,
    now_ns: u64,
    stuck: &BTreeMap<u64, &Goroutine>,
    waits_for: &BTreeMap<u64, BTreeSet<u64>>,
) -> Option<Finding> {
    let runtime_own = |g: &Goroutine| g.wait.as_ref().is_some_and(|w| w.class == WaitClass::Runtime);
    let user: BTreeSet<u64> = state.goroutines().filter(|g| !runtime_own(g)).map(|g| g.goid).collect();
    if user.is_empty() || !user.iter().all(|g| stuck.contains_key(g)) {
        return None;
    }
    let chain = graph::strongly_connected(waits_for)
        .into_iter()
        .filter(|c| c.len() > 1 || c.iter().any(|g| waits_for[g].contains(g)))
        .max_by_key(BTreeSet::len)
        .map(|c| graph::cycle_from(&c, waits_for))
        .unwrap_or_default();
    Some(deadlock_finding(state, now_ns, stuck, &user, chain, true))
}

fn deadlock_finding(
    state: &ProcessState,
    now_ns: u64,
    stuck: &BTreeMap<u64, &Goroutine>,
    group: &BTreeSet<u64>,
    chain: Vec<u64>,
    whole_process: bool,
) -> Finding {
    let ids: Vec<String> = group.iter().map(u64::to_string).collect();
    let chain_text = chain.iter().map(|g| format!("g{g}")).collect::<Vec<_>>().join(" -> ");
    let summary = match whole_process {
        true => format!(
            "whole-process deadlock: all {} user goroutines are blocked and none can wake another \
             (the Go runtime does not report it while timers, I/O or cgo keep it alive){}",
            group.len(),
            if chain.is_empty() { String::new() } else { format!("; cycle {chain_text}") }
        ),
        false => format!("deadlock: goroutines {} wait on each other in a cycle ({chain_text})", ids.join(", ")),
    };
    Finding {
        id: match whole_process {
            true => FindingKey::WholeProcess { pid: state.pid },
            false => FindingKey::Deadlock { pid: state.pid, goroutines: group.iter().copied().collect() },
        },
        finding_type: FindingType::Deadlock,
        grade: Grade::Proven,
        pid: state.pid,
        summary,
        goroutines: group.iter().map(|g| involved(state, stuck[g], now_ns)).collect(),
        chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        events::{EventDetail, GoroutineEvent},
        state::WaitReasons,
    };

    const LOCK: u32 = 104;
    const CHAN_SEND: u8 = 20;
    const MUTEX: u8 = 21;
    const GC_IDLE: u8 = 22;
    const SELECT_NO_CASES: u8 = 23;

    fn state_with(parks: &[(u64, u8)]) -> ProcessState {
        let mut names = vec![String::new(); 24];
        names[usize::from(SELECT_NO_CASES)] = "select (no cases)".into();
        names[usize::from(CHAN_SEND)] = "chan send".into();
        names[usize::from(MUTEX)] = "sync.Mutex.Lock".into();
        names[usize::from(GC_IDLE)] = "GC worker (idle)".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), LOCK);
        for &(goid, reason) in parks {
            st.apply(&GoroutineEvent::test_park(0, goid, reason, 0x1000 * goid + u64::from(LOCK)));
        }
        st
    }

    fn evidence(leaked: &[u64], wakes: &[(u64, &[u64])]) -> LeakEvidence {
        LeakEvidence {
            leaked: leaked.iter().copied().collect(),
            could_wake: wakes.iter().map(|&(g, w)| (g, w.iter().copied().collect())).collect(),
            since_ns: 10,
        }
    }

    fn running(st: &mut ProcessState, goid: u64) {
        st.apply(&GoroutineEvent::test(0, goid, EventDetail::Created { parent_goid: 1, creation_pc: 0, start_pc: 0 }));
    }

    #[test]
    fn lock_order_inversion_is_a_deadlock_with_its_chain_and_the_goroutines_behind_it() {
        // 3 and 4 each hold the lock the other wants; 5 waits on a lock 4 holds; 9 keeps running.
        let mut st = state_with(&[(3, MUTEX), (4, MUTEX), (5, MUTEX)]);
        running(&mut st, 9);
        let f = proven(&st, 100, 50, &evidence(&[3, 4, 5], &[(3, &[4]), (4, &[3, 5])]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].finding_type, FindingType::Deadlock);
        assert_eq!(f[0].grade, Grade::Proven);
        assert_eq!(f[0].chain, vec![3, 4]);
        assert_eq!(f[0].goroutines.iter().map(|g| g.goid).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(proven(&st, 100, 200, &evidence(&[3, 4, 5], &[])).is_empty(), "below the threshold");
    }

    #[test]
    fn orphaned_senders_are_one_leak_per_site_and_reason() {
        let mut st = state_with(&[(3, CHAN_SEND), (4, CHAN_SEND), (5, MUTEX)]);
        running(&mut st, 9);
        let f = proven(&st, 100, 50, &evidence(&[3, 4, 5], &[]));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|f| f.finding_type == FindingType::Leak && f.chain.is_empty()));
        let senders = f.iter().find(|f| f.goroutines.len() == 2).expect("both senders together");
        assert!(senders.summary.contains("2 goroutines blocked in chan send"), "{}", senders.summary);
    }

    #[test]
    fn senders_sharing_one_stuck_channel_are_one_leak_not_a_deadlock() {
        // 3, 4 and 5 send on one channel whose reader left: each stack holds the channel, so
        // each "could wake" the others, but only through the send it is stuck in.
        let mut st = ProcessState::new(1, state_with(&[]).reasons().clone(), LOCK);
        for goid in [3, 4, 5] {
            st.apply(&GoroutineEvent::test_park(0, goid, CHAN_SEND, 0x7000 + u64::from(LOCK)));
        }
        running(&mut st, 9);
        let f = proven(&st, 100, 50, &evidence(&[3, 4, 5], &[(3, &[4, 5]), (4, &[3, 5]), (5, &[3, 4])]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].finding_type, FindingType::Leak);
        assert_eq!(f[0].goroutines.iter().map(|g| g.goid).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn waiters_on_one_lock_whose_holder_left_are_one_leak_not_a_deadlock() {
        // 3 and 4 wait for one Mutex, 5 (a reader) and 6 (a writer) for one RWMutex; each
        // stack holds the lock it waits for, so each "could wake" the other, but neither holds
        // it. 7 waits for another lock that 3 refers to (3 could release it): 7 waits for 3.
        let mut st = state_with(&[(3, MUTEX), (4, MUTEX), (5, MUTEX), (6, MUTEX), (7, MUTEX)]);
        for (goid, lock) in [(3, 0xa0), (4, 0xa0), (5, 0xb0), (6, 0xb0), (7, 0xc0)] {
            st.set_park_details(goid, None, Some(lock));
        }
        running(&mut st, 9);
        let wakes: &[(u64, &[u64])] = &[(3, &[4, 7]), (4, &[3]), (5, &[6]), (6, &[5])];
        let f = proven(&st, 100, 50, &evidence(&[3, 4, 5, 6, 7], wakes));
        assert!(f.iter().all(|f| f.finding_type == FindingType::Leak), "{f:?}");
        let named: BTreeSet<u64> = f.iter().flat_map(|f| f.goroutines.iter().map(|g| g.goid)).collect();
        assert_eq!(named, BTreeSet::from([3, 4, 5, 6, 7]));
        // Two locks each held by the other's waiter stay a deadlock.
        let f = proven(&st, 100, 50, &evidence(&[3, 7], &[(3, &[7]), (7, &[3])]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].finding_type, FindingType::Deadlock);
    }

    #[test]
    fn a_process_with_every_user_goroutine_stuck_is_one_whole_process_deadlock() {
        // The runtime's own idle GC worker does not count as a goroutine that could help.
        let st = state_with(&[(1, CHAN_SEND), (3, MUTEX), (7, GC_IDLE)]);
        let f = proven(&st, 100, 50, &evidence(&[1, 3], &[(3, &[3])]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id.to_string(), "deadlock:1:process");
        assert_eq!(f[0].chain, vec![3], "a goroutine waiting on a lock it holds");
        assert!(f[0].summary.starts_with("whole-process deadlock: all 2 user goroutines"));
    }

    #[test]
    fn main_parked_in_an_empty_select_is_not_a_leak_but_other_goroutines_there_are() {
        let mut st = state_with(&[(1, SELECT_NO_CASES), (5, SELECT_NO_CASES)]);
        running(&mut st, 9);
        let f = proven(&st, 100, 50, &evidence(&[1, 5], &[]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].goroutines.iter().map(|g| g.goid).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn goroutines_blocked_after_the_analysis_began_are_not_judged() {
        let mut st = state_with(&[(3, CHAN_SEND)]);
        running(&mut st, 9);
        let late = LeakEvidence { since_ns: 0, ..evidence(&[3], &[]) };
        st.apply(&GoroutineEvent::test_park(5, 3, CHAN_SEND, 0x9000));
        assert!(proven(&st, 100, 50, &late).is_empty());
    }

    #[test]
    fn only_what_two_analyses_agree_on_is_evidence() {
        let a = evidence(&[3, 4, 5], &[(3, &[4, 5])]);
        let b = LeakEvidence { since_ns: 30, ..evidence(&[3, 4], &[(3, &[4, 5]), (5, &[3])]) };
        let both = a.confirmed_by(&b);
        assert_eq!(both.leaked, BTreeSet::from([3, 4]));
        assert_eq!(both.could_wake, HashMap::from([(3, BTreeSet::from([4]))]));
        assert_eq!(both.since_ns, 10);
    }
}
