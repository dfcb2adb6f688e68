//! Detectors: judgements of the goroutine/channel state at a point in time that return findings.
//! They never touch the kernel or the target (what memory showed comes in as [`Inputs`]), so they
//! are tested on hand-built state. Each is one [`Detector`]; [`all`] lists them.
mod blocked;
mod deadlock;
mod graph;
mod growth;
mod key;
mod leak;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::{
    Location, hex,
    state::{Goroutine, ProcessState, Wait},
};

pub use blocked::blocked;
pub use deadlock::{
    Holdings, candidates as deadlock_candidates, deadlocks, stuck_without_outside as deadlock_stuck_without_outside, wait_objects,
};
pub use growth::LeakGrowth;
pub use key::FindingKey;
pub use leak::{LeakEvidence, proven};

/// What the detectors judge on one tick.
pub struct Inputs<'a> {
    pub state: &'a ProcessState,
    pub now_ns: u64,
    /// How long a goroutine must have blocked before it is judged.
    pub threshold_ns: u64,
    /// Which blocked-on objects each blocked goroutine, and any other goroutine, refers to
    /// (deadlock suspects' evidence).
    pub holdings: &'a Holdings,
    /// What two complete reachability analyses agree on, when there is such evidence.
    pub proof: Option<&'a LeakEvidence>,
}

/// One kind of judgement, run on every tick. Stateful detectors (growth) keep their history.
pub trait Detector {
    fn check(&mut self, inputs: &Inputs<'_>) -> Vec<Finding>;
}

/// Goroutines blocked past the threshold ([`blocked()`]).
pub struct Blocked;

impl Detector for Blocked {
    fn check(&mut self, i: &Inputs<'_>) -> Vec<Finding> {
        blocked(i.state, i.now_ns, i.threshold_ns)
    }
}

impl Detector for LeakGrowth {
    fn check(&mut self, i: &Inputs<'_>) -> Vec<Finding> {
        LeakGrowth::check(self, i.state, i.now_ns, i.threshold_ns)
    }
}

/// Groups of goroutines that only refer to each other's objects ([`deadlocks()`]).
pub struct DeadlockSuspects;

impl Detector for DeadlockSuspects {
    fn check(&mut self, i: &Inputs<'_>) -> Vec<Finding> {
        deadlocks(i.state, i.now_ns, i.threshold_ns, i.holdings)
    }
}

/// Leaks and deadlocks the reachability analysis proves ([`proven()`]).
pub struct ProvenLeaks;

impl Detector for ProvenLeaks {
    fn check(&mut self, i: &Inputs<'_>) -> Vec<Finding> {
        i.proof.map(|evidence| proven(i.state, i.now_ns, i.threshold_ns, evidence)).unwrap_or_default()
    }
}

/// Every detector, weakest judgement first. Growth is sampled every threshold (1 s to 60 s).
pub fn all(threshold_ns: u64) -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(Blocked),
        Box::new(LeakGrowth::new(threshold_ns.clamp(1_000_000_000, 60_000_000_000))),
        Box::new(DeadlockSuspects),
        Box::new(ProvenLeaks),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FindingType {
    /// Blocked longer than the threshold (idle workers too: a metric, low severity).
    Blocked,
    /// Blocked where nothing can ever unblock it, or a growing pile at one site.
    Leak,
    /// A cycle of goroutines each waiting on the next.
    Deadlock,
}

impl FindingType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Leak => "leak",
            Self::Deadlock => "deadlock",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// Heuristic: long block, growth.
    Suspect,
    /// Structural: a cycle, or every counterpart dead or itself stuck, stable across re-checks.
    Proven,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspect => "suspect",
            Self::Proven => "proven",
        }
    }
}

/// One goroutine as a finding presents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Involved {
    pub goid: u64,
    pub wait_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    pub waiting_for_ns: u64,
    /// True when the wait began before goscope attached and the runtime did not record when.
    pub waiting_for_is_lower_bound: bool,
    /// Where it blocked, innermost frame first (empty until read from memory).
    pub stack: Vec<Location>,
    /// The blocking call ([`crate::model::state::Wait::site`]), for exporters; the JSON has the stack.
    #[serde(skip)]
    pub site: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable across re-checks of the same situation, so a later retraction can name it.
    pub id: FindingKey,
    #[serde(rename = "type")]
    pub finding_type: FindingType,
    pub grade: Grade,
    pub pid: u32,
    pub goroutines: Vec<Involved>,
    /// Deadlocks: the goids of the cycle, in wait-for order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<u64>,
    pub summary: String,
}

/// Involved goroutines as tests of findings build them: nothing known but the goid.
#[cfg(test)]
impl Involved {
    pub(crate) fn test(goid: u64) -> Self {
        Self {
            goid,
            wait_reason: String::new(),
            channel: None,
            lock: None,
            waiting_for_ns: 0,
            waiting_for_is_lower_bound: false,
            stack: Vec::new(),
            site: None,
        }
    }
}

/// How a finding presents goroutine `g` at `now_ns`.
fn involved(state: &ProcessState, g: &Goroutine, now_ns: u64) -> Involved {
    let wait = g.wait.as_ref();
    Involved {
        goid: g.goid,
        wait_reason: wait.and_then(|w| state.reasons().name(w.reason_code)).unwrap_or("unknown").to_owned(),
        channel: wait.and_then(|w| w.channels.first().copied()).map(hex),
        lock: wait.and_then(|w| w.lock).map(hex),
        waiting_for_ns: now_ns.saturating_sub(g.since_ns),
        waiting_for_is_lower_bound: g.since_is_lower_bound,
        stack: wait.map(|w| w.stack.clone()).unwrap_or_default(),
        site: wait.and_then(Wait::site).cloned(),
    }
}

/// The proven ones among `findings` cover the suspect leak or deadlock `f`: each goroutine it
/// names is named by one of them. One situation is reported once, at the strongest grade: a
/// suspect chain among goroutines the proof judged (in its cycles, or leaked with no cycle
/// memory shows) is the weaker judgement of them. `blocked` findings are never covered (they are
/// a metric).
pub fn superseded<'a>(findings: impl IntoIterator<Item = &'a Finding>, f: &Finding) -> bool {
    if f.grade != Grade::Suspect || f.finding_type == FindingType::Blocked {
        return false;
    }
    let proven: Vec<&Finding> = findings.into_iter().filter(|p| p.grade == Grade::Proven).collect();
    let named: BTreeSet<u64> = proven.iter().flat_map(|p| p.goroutines.iter().map(|g| g.goid)).collect();
    !proven.is_empty() && f.goroutines.iter().all(|g| named.contains(&g.goid))
}

/// Drops the findings the proven ones cover ([`superseded`]).
pub fn drop_superseded(findings: &mut Vec<Finding>) {
    let proven: Vec<Finding> = findings.iter().filter(|f| f.grade == Grade::Proven).cloned().collect();
    findings.retain(|f| !superseded(&proven, f));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(t: FindingType, grade: Grade, goids: &[u64]) -> Finding {
        Finding {
            id: FindingKey::Deadlock { pid: 1, goroutines: goids.to_vec() },
            finding_type: t,
            grade,
            pid: 1,
            goroutines: goids.iter().map(|&goid| Involved::test(goid)).collect(),
            chain: Vec::new(),
            summary: String::new(),
        }
    }

    #[test]
    fn a_suspect_covered_by_a_proof_goes_others_stay() {
        let mut f = vec![
            finding(FindingType::Deadlock, Grade::Suspect, &[3, 4]),
            finding(FindingType::Deadlock, Grade::Proven, &[3, 4, 5]),
            finding(FindingType::Deadlock, Grade::Suspect, &[6, 7]),
            finding(FindingType::Blocked, Grade::Suspect, &[3]),
        ];
        drop_superseded(&mut f);
        let left: Vec<Vec<u64>> = f.iter().map(|f| f.goroutines.iter().map(|g| g.goid).collect()).collect();
        assert_eq!(left, vec![vec![3, 4, 5], vec![6, 7], vec![3]]);
    }

    #[test]
    fn a_suspect_chain_among_goroutines_proven_leaked_at_several_sites_goes() {
        // 3 and 4 proven leaked at two park sites (no cycle memory shows): the suspect chain
        // between them is the weaker judgement. 5 is not proven: a suspect naming it stays.
        let mut f = vec![
            finding(FindingType::Deadlock, Grade::Suspect, &[3, 4]),
            finding(FindingType::Leak, Grade::Proven, &[3]),
            finding(FindingType::Leak, Grade::Proven, &[4]),
            finding(FindingType::Deadlock, Grade::Suspect, &[4, 5]),
        ];
        drop_superseded(&mut f);
        let left: Vec<Vec<u64>> = f.iter().map(|f| f.goroutines.iter().map(|g| g.goid).collect()).collect();
        assert_eq!(left, vec![vec![3], vec![4], vec![4, 5]]);
    }
}
