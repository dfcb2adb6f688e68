//! Deadlock chains on channels, locks, WaitGroups and Conds: goroutines blocked where every
//! goroutine that could still serve what each waits on is itself blocked in the same set.
//!
//! "Could serve object X" (a channel; a Mutex/RWMutex it could unlock; a WaitGroup it could call
//! Done on; a Cond it could Signal or Broadcast) is judged from evidence: a goroutine whose parked
//! stack, or a package-level variable its code uses, refers to X, and that is not blocked on X
//! the same way (two blocked receivers, two goroutines waiting to lock X, two waiters of one
//! WaitGroup or one Cond cannot unblock each other). A Cond also counts as referred to through
//! its Locker (or the object holding it). Goroutines outside the blocked set are invisible to
//! that judgement, so before a set is reported every other goroutine's stack is read too
//! ([`Holdings::outside`]): one of them that refers to a member's object may still serve it (a
//! producer sleeping between sends to idle workers that a `wg.Wait` waits for), and then nothing
//! is reported. Findings are graded `suspect`: the evidence is what stacks and code refer to.
//! This judges what reachability cannot prove: locks in package-level variables are reachable by
//! every goroutine.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Finding, FindingKey, FindingType, Grade, graph, involved};
use crate::model::state::{Goroutine, ProcessState, Wait, WaitClass};

/// The deadlock detector's evidence: which wait objects (from [`wait_objects`]) each candidate
/// refers to, and which of them goroutines outside the candidates refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Candidate goid → the objects its stack or the package-level variables its code uses refer to.
    pub of: HashMap<u64, BTreeSet<u64>>,
    /// Objects that some goroutine which is not a candidate (running, runnable, in a system call,
    /// sleeping, blocked on something else or not for long) refers to, read after the candidates
    /// formed a stuck set. None: not read (no stuck set then, or more goroutines than a bounded
    /// read covers): no suspect is raised.
    pub outside: Option<BTreeSet<u64>>,
    /// `outside` joins two reads (some time apart) that each found it: a goroutine that moved a
    /// reference while one read was under way, or ran in a function whose frame no read shows,
    /// is seen by the other. Only confirmed evidence raises a suspect.
    pub confirmed: bool,
}

impl Holdings {
    /// Evidence about the candidates only (`outside` unread).
    pub fn of(of: HashMap<u64, BTreeSet<u64>>) -> Self {
        Self { of, outside: None, confirmed: false }
    }

    /// This read joined with the `previous` one: confirmed when both read the other goroutines,
    /// with what either saw them refer to.
    pub fn confirmed_by(mut self, previous: &Holdings) -> Holdings {
        if let (Some(now), Some(before)) = (&mut self.outside, &previous.outside) {
            now.extend(before.iter().copied());
            self.confirmed = true;
        }
        self
    }

    /// The other goroutines were read once only: read them again before anything is raised.
    pub fn needs_confirmation(&self) -> bool {
        self.outside.is_some() && !self.confirmed
    }
}

/// What a wait can be served through: its channels, the lock it waits to take, the WaitGroup it
/// waits on or the Cond it waits to be signalled on.
pub fn wait_objects(w: &Wait) -> Vec<u64> {
    match w.class {
        WaitClass::ChanSend | WaitClass::ChanReceive | WaitClass::Select => w.channels.clone(),
        WaitClass::Mutex | WaitClass::RWMutexRead | WaitClass::RWMutexWrite | WaitClass::WaitGroup | WaitClass::Cond => {
            w.lock.into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// Goroutines blocked on channels, locks, WaitGroups or Conds for at least `threshold_ns`: the
/// candidates whose stacks the caller reads into [`Holdings`].
pub fn candidates(state: &ProcessState, now_ns: u64, threshold_ns: u64) -> Vec<&Goroutine> {
    state
        .goroutines()
        .filter(|g| now_ns.saturating_sub(g.since_ns) >= threshold_ns)
        .filter(|g| g.wait.as_ref().is_some_and(|w| !wait_objects(w).is_empty()))
        .collect()
}

/// The candidates that have evidence, by goid.
fn blocked<'s>(state: &'s ProcessState, now_ns: u64, threshold_ns: u64, holdings: &Holdings) -> BTreeMap<u64, &'s Goroutine> {
    candidates(state, now_ns, threshold_ns)
        .into_iter()
        .filter(|g| holdings.of.contains_key(&g.goid))
        .map(|g| (g.goid, g))
        .collect()
}

/// Who could serve `g`: per object it waits on, the other candidates that refer to it and do not
/// wait on it the same way.
fn servers(g: &Goroutine, blocked: &BTreeMap<u64, &Goroutine>, holdings: &Holdings) -> Vec<BTreeSet<u64>> {
    let Some(wait) = &g.wait else {
        return Vec::new();
    };
    wait_objects(wait)
        .into_iter()
        .map(|x| {
            blocked
                .values()
                .filter(|h| h.goid != g.goid && holdings.of[&h.goid].contains(&x) && !same_side(g, h, x))
                .map(|h| h.goid)
                .collect()
        })
        .collect()
}

/// The greatest set of candidates where every object of every member has servers, all of them
/// members, and (when `outside` is given) no goroutine outside the candidates refers to one.
fn stuck_set(blocked: &BTreeMap<u64, &Goroutine>, holdings: &Holdings, outside: Option<&BTreeSet<u64>>) -> BTreeSet<u64> {
    let served: BTreeMap<u64, Vec<BTreeSet<u64>>> =
        blocked.iter().map(|(&goid, g)| (goid, servers(g, blocked, holdings))).collect();
    let seen_outside =
        |g: &Goroutine| outside.is_some_and(|o| g.wait.as_ref().is_some_and(|w| wait_objects(w).iter().any(|x| o.contains(x))));
    let mut stuck: BTreeSet<u64> = blocked.iter().filter(|(_, g)| !seen_outside(g)).map(|(&goid, _)| goid).collect();
    loop {
        let leaving: Vec<u64> =
            stuck.iter().copied().filter(|goid| served[goid].iter().any(|s| s.is_empty() || !s.is_subset(&stuck))).collect();
        if leaving.is_empty() {
            return stuck;
        }
        for goid in leaving {
            stuck.remove(&goid);
        }
    }
}

/// The candidates that only each other could serve, judged on the candidates' evidence alone:
/// the goroutines whose objects the caller must then look for in every other goroutine's stack
/// ([`Holdings::outside`]). Empty: nothing to report, whatever the others refer to.
pub fn stuck_without_outside(state: &ProcessState, now_ns: u64, threshold_ns: u64, holdings: &Holdings) -> BTreeSet<u64> {
    stuck_set(&blocked(state, now_ns, threshold_ns, holdings), holdings, None)
}

pub fn deadlocks(state: &ProcessState, now_ns: u64, threshold_ns: u64, holdings: &Holdings) -> Vec<Finding> {
    // Without having looked at the other goroutines, a server may be among them: nothing.
    let (Some(outside), true) = (&holdings.outside, holdings.confirmed) else {
        return Vec::new();
    };
    let blocked = blocked(state, now_ns, threshold_ns, holdings);
    let stuck = stuck_set(&blocked, holdings, Some(outside));
    // One finding per group of goroutines connected by waiting (a cycle and those stuck behind
    // it), with one cycle through it as chain.
    let waits_for: BTreeMap<u64, BTreeSet<u64>> =
        stuck.iter().map(|&g| (g, servers(blocked[&g], &blocked, holdings).into_iter().flatten().collect())).collect();
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
                "deadlock: goroutines {} wait on channels, locks, WaitGroups or Conds only the others refer to (chain {})",
                ids.join(", "),
                chain.iter().map(|g| format!("g{g}")).collect::<Vec<_>>().join(" -> ")
            ),
            goroutines,
            chain,
        });
    }
    findings
}

/// Both wait on `x` the same way (both send, both receive, both wait to lock it, both wait on one
/// WaitGroup or Cond): neither can complete the other. A blocked reader and a blocked writer of
/// one RWMutex can (the reader may hold a read lock already: the recursive-read deadlock).
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

    /// Evidence where no goroutine outside the candidates refers to anything.
    fn holds(h: &[(u64, &[u64])]) -> Holdings {
        Holdings {
            of: h.iter().map(|&(g, c)| (g, c.iter().copied().collect())).collect(),
            outside: Some(BTreeSet::new()),
            confirmed: true,
        }
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

    /// Parks on sync primitives: (goid, class, address of the primitive).
    fn sync_state(parks: &[(u64, WaitClass, u64)]) -> ProcessState {
        let mut names = vec![String::new(); 26];
        names[19] = "chan receive".into();
        names[21] = "sync.Mutex.Lock".into();
        names[22] = "sync.RWMutex.RLock".into();
        names[23] = "sync.RWMutex.Lock".into();
        names[24] = "sync.WaitGroup.Wait".into();
        names[25] = "sync.Cond.Wait".into();
        let mut st = ProcessState::new(1, WaitReasons::new(names), LOCK);
        for &(goid, class, addr) in parks {
            let reason = match class {
                WaitClass::ChanReceive => 19,
                WaitClass::Mutex => 21,
                WaitClass::RWMutexRead => 22,
                WaitClass::RWMutexWrite => 23,
                WaitClass::WaitGroup => 24,
                WaitClass::Cond => 25,
                _ => unreachable!("not used here"),
            };
            if class == WaitClass::ChanReceive {
                st.apply(&GoroutineEvent::test_park(0, goid, reason, addr + u64::from(LOCK)));
            } else {
                st.apply(&GoroutineEvent::test_park(0, goid, reason, 0x9000));
                st.enrich_wait(goid, class, &[], Some(addr), Vec::new());
            }
        }
        st
    }

    fn groups(f: &[Finding]) -> Vec<Vec<u64>> {
        let mut g: Vec<Vec<u64>> = f.iter().map(|f| f.goroutines.iter().map(|g| g.goid).collect()).collect();
        g.sort();
        g
    }

    const MU: u64 = 0x7000;
    const RW: u64 = 0x7100;
    const WG: u64 = 0x7200;
    const COND: u64 = 0x7300;
    const GATE: u64 = 0x7400;
    const JOBS: u64 = 0x7500;

    #[test]
    fn a_waitgroup_waiter_whose_workers_are_deadlocked_on_package_level_locks_joins_their_deadlock() {
        // 1 holds MU and waits to write-lock RW; 2 and 3 hold read locks of RW and wait for MU;
        // all three would call WG.Done; 4 waits on WG.
        let st = sync_state(&[
            (1, WaitClass::RWMutexWrite, RW),
            (2, WaitClass::Mutex, MU),
            (3, WaitClass::Mutex, MU),
            (4, WaitClass::WaitGroup, WG),
        ]);
        let h = holds(&[(1, &[MU, RW, WG]), (2, &[MU, RW, WG]), (3, &[MU, RW, WG]), (4, &[WG])]);
        let f = deadlocks(&st, 100, 50, &h);
        assert_eq!(groups(&f), vec![vec![1, 2, 3, 4]]);
        assert_eq!(f[0].chain, vec![1, 2]);
        assert_eq!(f[0].goroutines[3].lock.as_deref(), Some("0x7200"));
        // A worker outside the stuck set (say, sleeping) that refers to WG could still call Done:
        // the waiter is not stuck, the lock deadlock still is.
        let mut h = h;
        h.outside = Some(BTreeSet::from([WG]));
        assert_eq!(groups(&deadlocks(&st, 100, 50, &h)), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn waiters_of_one_waitgroup_or_one_cond_do_not_serve_each_other() {
        let st = sync_state(&[
            (1, WaitClass::WaitGroup, WG),
            (2, WaitClass::WaitGroup, WG),
            (3, WaitClass::Cond, COND),
            (4, WaitClass::Cond, COND),
        ]);
        let h = holds(&[(1, &[WG]), (2, &[WG]), (3, &[COND]), (4, &[COND])]);
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
        assert!(stuck_without_outside(&st, 100, 50, &h).is_empty());
    }

    #[test]
    fn cond_waiters_whose_only_signaller_is_stuck_behind_one_of_them_are_a_deadlock() {
        // 1 holds GATE while it waits on COND; 2 and 3 wait on COND; 4 would Signal COND but
        // waits for GATE first.
        let st = sync_state(&[
            (1, WaitClass::Cond, COND),
            (2, WaitClass::Cond, COND),
            (3, WaitClass::Cond, COND),
            (4, WaitClass::Mutex, GATE),
        ]);
        let h = holds(&[(1, &[COND, GATE]), (2, &[COND]), (3, &[COND]), (4, &[COND, GATE])]);
        let f = deadlocks(&st, 100, 50, &h);
        assert_eq!(groups(&f), vec![vec![1, 2, 3, 4]]);
        assert_eq!(f[0].chain, vec![1, 4]);
        // A signaller that sleeps (outside the candidates) and refers to the Cond: nothing.
        let mut h = h;
        h.outside = Some(BTreeSet::from([COND]));
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
    }

    #[test]
    fn a_worker_pool_fed_by_a_sleeping_producer_is_not_a_deadlock() {
        // main (1) waits on WG and refers to JOBS (it made the channel); workers 2 and 3 receive
        // from JOBS and refer to WG. On their evidence alone they only serve each other...
        let st =
            sync_state(&[(1, WaitClass::WaitGroup, WG), (2, WaitClass::ChanReceive, JOBS), (3, WaitClass::ChanReceive, JOBS)]);
        let mut h = holds(&[(1, &[WG, JOBS]), (2, &[WG, JOBS]), (3, &[WG, JOBS])]);
        assert_eq!(stuck_without_outside(&st, 100, 50, &h), BTreeSet::from([1, 2, 3]));
        // ...but the producer, asleep between sends, refers to JOBS: it may still feed them.
        h.outside = Some(BTreeSet::from([JOBS]));
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
        // Not having read the other goroutines is no evidence that none of them serves.
        h.outside = None;
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
        // Nor is one read of them: the next tick reads them again, and what either read saw
        // counts.
        let first = Holdings { outside: Some(BTreeSet::new()), confirmed: false, ..h.clone() };
        assert!(first.needs_confirmation() && deadlocks(&st, 100, 50, &first).is_empty());
        let second = Holdings { outside: Some(BTreeSet::new()), confirmed: false, ..h.clone() }.confirmed_by(&first);
        assert!(!second.needs_confirmation());
        assert_eq!(groups(&deadlocks(&st, 100, 50, &second)), vec![vec![1, 2, 3]]);
        let seen_once = Holdings { outside: Some(BTreeSet::from([JOBS])), ..first.clone() };
        assert!(
            deadlocks(&st, 100, 50, &Holdings { outside: Some(BTreeSet::new()), ..h.clone() }.confirmed_by(&seen_once))
                .is_empty()
        );
    }

    #[test]
    fn an_outside_reference_to_one_link_frees_the_whole_chain() {
        // 1 sends X (2 holds X), 2 sends Y (3 holds Y), 3 sends Z (1 holds Z); something outside
        // refers to Y and may receive from it: 2 may move on, and so everyone may.
        const X: u64 = 0x1000;
        const Y: u64 = 0x2000;
        const Z: u64 = 0x3000;
        let st = state_with(&[(1, 20, X), (2, 20, Y), (3, 20, Z)]);
        let mut h = holds(&[(1, &[X, Z]), (2, &[X, Y]), (3, &[Y, Z])]);
        h.outside = Some(BTreeSet::from([Y]));
        assert!(deadlocks(&st, 100, 50, &h).is_empty());
    }
}
