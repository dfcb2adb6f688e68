//! Leak suspects by growth: ever more goroutines blocked at the same place, sample after sample
//! (the classic leak of a worker per request whose result nobody reads any more). A heuristic —
//! a slow ramp-up of a pool looks the same for a while — so these are `suspect`.
use std::collections::{HashMap, VecDeque};

use super::{Finding, FindingKey, FindingType, Grade, involved};
use crate::model::{Location, state::ProcessState};

/// Consecutive samples in which the pile must have grown before it is a suspect.
const RISES: usize = 3;
/// Most goroutines listed in one finding (the summary gives the total).
const MAX_LISTED: usize = 100;

/// A park site and wait reason code.
type Site = (Location, u8);
/// Goroutines blocked past the threshold, by site (borrowed from the state for one check).
type Piles<'a> = HashMap<(&'a Location, u8), Vec<u64>>;

/// Counts of goroutines blocked past the threshold per site, sampled every `interval_ns`.
#[derive(Debug)]
pub struct LeakGrowth {
    interval_ns: u64,
    next_sample_ns: u64,
    /// Counts at the last samples, oldest first (at most RISES + 1).
    history: HashMap<Site, VecDeque<usize>>,
    /// Sites found growing, with their count then: the suspicion stands until the pile shrinks
    /// below it.
    growing: HashMap<Site, usize>,
}

impl LeakGrowth {
    pub fn new(interval_ns: u64) -> Self {
        Self { interval_ns: interval_ns.max(1), next_sample_ns: 0, history: HashMap::new(), growing: HashMap::new() }
    }

    /// Samples when an interval has passed, then returns a finding per growing site. Between
    /// samples, with nothing growing, it does no work (it runs on every tick).
    pub fn check(&mut self, state: &ProcessState, now_ns: u64, threshold_ns: u64) -> Vec<Finding> {
        if now_ns < self.next_sample_ns && self.growing.is_empty() {
            return Vec::new();
        }
        let mut piles: Piles = HashMap::new();
        for g in state.goroutines().filter(|g| now_ns.saturating_sub(g.since_ns) >= threshold_ns) {
            let Some(wait) = g.wait.as_ref().filter(|w| w.class.is_user_blocking()) else {
                continue;
            };
            if let Some(site) = wait.site() {
                piles.entry((site, wait.reason_code)).or_default().push(g.goid);
            }
        }
        if now_ns >= self.next_sample_ns {
            self.next_sample_ns = now_ns + self.interval_ns;
            self.sample(&piles);
        }
        let mut findings: Vec<Finding> = self
            .growing
            .keys()
            .filter_map(|site| {
                let (place, reason_code) = site;
                let goids = piles.get(&(place, *reason_code))?;
                let reason = state.reasons().name(*reason_code).unwrap_or("unknown");
                let first = self.history.get(site).and_then(|h| h.front()).copied().unwrap_or(0);
                Some(Finding {
                    id: FindingKey::leak(state.pid, Some(place), reason),
                    finding_type: FindingType::Leak,
                    grade: Grade::Suspect,
                    pid: state.pid,
                    summary: format!(
                        "leak suspect: {} goroutines blocked in {reason} at {} ({}:{}), up from {first} {} samples ago",
                        goids.len(),
                        place.function,
                        place.file,
                        place.line,
                        RISES
                    ),
                    goroutines: goids
                        .iter()
                        .take(MAX_LISTED)
                        .filter_map(|g| state.goroutine(*g))
                        .map(|g| involved(state, g, now_ns))
                        .collect(),
                    chain: Vec::new(),
                })
            })
            .collect();
        findings.sort_by(|a, b| a.id.cmp(&b.id));
        findings
    }

    fn sample(&mut self, piles: &Piles) {
        self.history.retain(|(place, code), _| piles.contains_key(&(place, *code)));
        for (&(place, code), goids) in piles {
            let site = (place.clone(), code);
            let h = self.history.entry(site.clone()).or_default();
            h.push_back(goids.len());
            if h.len() > RISES + 1 {
                h.pop_front();
            }
            if h.len() == RISES + 1 && h.iter().zip(h.iter().skip(1)).all(|(a, b)| b > a) {
                self.growing.entry(site.clone()).or_insert(goids.len());
            }
        }
        self.growing.retain(|(place, code), flagged| piles.get(&(place, *code)).is_some_and(|g| g.len() >= *flagged));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        events::{EventDetail, GoroutineEvent},
        state::{WaitClass, WaitReasons},
    };

    const CHAN_SEND: u8 = 20;
    const SEC: u64 = 1_000_000_000;

    fn site(line: u32) -> Location {
        Location::new("main.worker", "/src/main.go", line)
    }

    /// Parks `n` more goroutines sending at `line`, with their park stacks known.
    fn park(st: &mut ProcessState, first_goid: u64, n: u64, line: u32, ts_ns: u64) {
        for goid in first_goid..first_goid + n {
            st.apply(&GoroutineEvent::test_park(ts_ns, goid, CHAN_SEND, 0x1068));
            let runtime = Location::new("runtime.chansend1", "chan.go", 1);
            st.enrich_wait(goid, WaitClass::ChanSend, &[], None, vec![runtime, site(line)]);
        }
    }

    fn state() -> ProcessState {
        let mut names = vec![String::new(); 21];
        names[usize::from(CHAN_SEND)] = "chan send".into();
        ProcessState::new(1, WaitReasons::new(names), 104)
    }

    #[test]
    fn a_pile_that_grows_on_every_sample_is_a_suspect_until_it_shrinks() {
        let mut st = state();
        let mut growth = LeakGrowth::new(10 * SEC);
        // An idle pool: constant, never a suspect.
        park(&mut st, 1000, 8, 7, 0);
        let mut next = 1;
        for i in 0..RISES as u64 + 1 {
            park(&mut st, next, 2, 42, i * 10 * SEC);
            next += 2;
            let now = i * 10 * SEC + SEC;
            let f = growth.check(&st, now, SEC / 2);
            assert_eq!(f.is_empty(), i < RISES as u64, "sample {i}: {f:?}");
        }
        let f = growth.check(&st, 31 * SEC, SEC / 2);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].grade, Grade::Suspect);
        assert_eq!(f[0].goroutines.len(), 8);
        assert!(
            f[0].summary.contains("8 goroutines blocked in chan send at main.worker (/src/main.go:42), up from 2"),
            "{}",
            f[0].summary
        );
        // Half of them are served: no longer a suspect.
        for goid in 1..5 {
            st.apply(&GoroutineEvent::test(35 * SEC, goid, EventDetail::Exited));
        }
        assert!(growth.check(&st, 41 * SEC, SEC / 2).is_empty());
    }
}
