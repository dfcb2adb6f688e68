//! Finding identity over time: a finding is raised once seen on consecutive ticks, upgraded
//! when a stronger grade judges the same situation, and retracted when it goes away.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
};

use crate::{
    detect::{self, Finding, FindingKey, FindingType},
    model::Location,
    sink::{Format, OutputLine},
};

/// A finding is reported once it has been seen on this many consecutive ticks.
const CONFIRMATIONS: u32 = 2;

/// A finding appearing (after confirmation) or going away.
pub enum Change {
    Raised(Finding),
    Retracted(Finding),
}

impl Change {
    /// The change as one output line; JSON lines carry the process's `k8s.*` attributes.
    pub fn render(&self, format: Format, k8s: &BTreeMap<&'static str, String>) -> io::Result<String> {
        Ok(match format {
            Format::Json => match self {
                Self::Raised(finding) => OutputLine::Finding { finding, k8s }.to_json()?,
                Self::Retracted(finding) => OutputLine::Retraction { finding, k8s }.to_json()?,
            },
            Format::Text => match self {
                Self::Raised(f) => format!("FINDING [{}/{}] {}", f.finding_type.as_str(), f.grade.as_str(), f.summary),
                Self::Retracted(f) => format!("retracted: {}", f.summary),
            },
        })
    }
}

/// Most retracted blocked findings remembered (then forgotten all at once: at worst one more
/// flip each).
const MAX_FLAPPED: usize = 16_384;

/// Confirms findings over consecutive ticks and notices when they go away.
///
/// Hysteresis for `blocked`: once a goroutine's blocked finding at a park site was retracted, a
/// later one for the same goroutine at the same site is not reported (nor, then, retracted): a
/// periodic loop that blocks there on every round would otherwise flip between the two forever.
#[derive(Default)]
pub struct FindingTracker {
    /// id → (finding, consecutive sightings)
    seen: BTreeMap<FindingKey, (Finding, u32)>,
    /// Blocked findings retracted once: (id, park site).
    flapped: BTreeSet<(FindingKey, Option<Location>)>,
}

/// The key [`FindingTracker::flapped`] knows a blocked finding by.
fn flap_key(f: &Finding) -> Option<(FindingKey, Option<Location>)> {
    (f.finding_type == FindingType::Blocked).then(|| (f.id.clone(), f.goroutines.first().and_then(|g| g.site.clone())))
}

impl FindingTracker {
    /// Detectors may judge one situation twice (a growing pile at a site, then proof that it
    /// leaks): the strongest grade per id wins, and an upgrade of a reported finding is raised anew.
    pub fn update(&mut self, current: Vec<Finding>) -> Vec<Change> {
        let mut strongest: BTreeMap<FindingKey, Finding> = BTreeMap::new();
        for f in current {
            match strongest.get(&f.id) {
                Some(kept) if kept.grade >= f.grade => {}
                _ => {
                    strongest.insert(f.id.clone(), f);
                }
            }
        }
        let mut changes = Vec::new();
        let mut next = BTreeMap::new();
        for (id, f) in strongest {
            let (count, upgraded) = match self.seen.remove(&id) {
                Some((old, n)) => (n.saturating_add(1), n >= CONFIRMATIONS && f.grade > old.grade),
                None => (1, false),
            };
            let flapping = flap_key(&f).is_some_and(|k| self.flapped.contains(&k));
            if (count == CONFIRMATIONS || upgraded) && !flapping {
                changes.push(Change::Raised(f.clone()));
            }
            next.insert(id, (f, count));
        }
        // Gone because a proof now covers it is not a retraction: the proof was just raised.
        for (_, (f, count)) in std::mem::take(&mut self.seen) {
            let key = flap_key(&f);
            if key.as_ref().is_some_and(|k| self.flapped.contains(k)) {
                continue;
            }
            if count >= CONFIRMATIONS && !detect::superseded(next.values().map(|(p, _)| p), &f) {
                if let Some(k) = key {
                    if self.flapped.len() >= MAX_FLAPPED {
                        self.flapped.clear();
                    }
                    self.flapped.insert(k);
                }
                changes.push(Change::Retracted(f));
            }
        }
        self.seen = next;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{FindingType, Grade};

    /// A blocked finding about goroutine `goid`.
    fn finding(goid: u64) -> Finding {
        Finding {
            id: FindingKey::Blocked { pid: 1, goid },
            finding_type: FindingType::Blocked,
            grade: Grade::Suspect,
            pid: 1,
            goroutines: vec![],
            chain: vec![],
            summary: format!("g{goid}"),
        }
    }

    #[test]
    fn findings_are_confirmed_before_reporting_and_retracted_when_gone() {
        let mut t = FindingTracker::default();
        assert!(t.update(vec![finding(1)]).is_empty(), "first sighting is not reported");
        let raised = t.update(vec![finding(1)]);
        assert!(matches!(raised.as_slice(), [Change::Raised(f)] if f.id == finding(1).id));
        assert!(t.update(vec![finding(1)]).is_empty(), "reported once");
        let gone = t.update(vec![]);
        assert!(matches!(gone.as_slice(), [Change::Retracted(f)] if f.id == finding(1).id));
        // A one-tick blip is never reported, so it is never retracted either.
        assert!(t.update(vec![finding(2)]).is_empty());
        assert!(t.update(vec![]).is_empty());
    }

    #[test]
    fn a_periodic_blocked_finding_is_reported_and_retracted_once() {
        let mut t = FindingTracker::default();
        let mut changes = Vec::new();
        // A ticker loop: blocked past the threshold for 3 ticks, then woken, 10 times over.
        for _ in 0..10 {
            for _ in 0..3 {
                changes.extend(t.update(vec![finding(7)]));
            }
            changes.extend(t.update(vec![]));
        }
        let kinds: Vec<&str> =
            changes.iter().map(|c| if matches!(c, Change::Raised(_)) { "raised" } else { "retracted" }).collect();
        assert_eq!(kinds, ["raised", "retracted"]);
        // Blocked somewhere else, it is news again.
        let elsewhere = Finding {
            goroutines: vec![detect::Involved {
                site: Some(Location::new("main.other", "m.go", 9)),
                ..detect::Involved::test(7)
            }],
            ..finding(7)
        };
        t.update(vec![elsewhere.clone()]);
        assert_eq!(t.update(vec![elsewhere]).len(), 1);
    }

    #[test]
    fn a_suspect_proven_later_is_raised_again_once() {
        let mut t = FindingTracker::default();
        let proven = Finding { grade: Grade::Proven, ..finding(1) };
        t.update(vec![finding(1)]);
        assert_eq!(t.update(vec![finding(1)]).len(), 1);
        let up = t.update(vec![finding(1), proven.clone()]);
        assert!(matches!(up.as_slice(), [Change::Raised(f)] if f.grade == Grade::Proven), "upgrade raised");
        assert!(t.update(vec![proven, finding(1)]).is_empty(), "and only once");
    }

    #[test]
    fn a_suspect_a_proof_covers_under_another_id_is_not_retracted() {
        let mut t = FindingTracker::default();
        let pair = FindingKey::Deadlock { pid: 1, goroutines: vec![1, 2] };
        let suspect = Finding { id: pair, finding_type: FindingType::Deadlock, ..finding(1) };
        let whole = Finding { grade: Grade::Proven, ..Finding { id: FindingKey::WholeProcess { pid: 1 }, ..suspect.clone() } };
        t.update(vec![suspect.clone()]);
        t.update(vec![suspect]);
        assert!(t.update(vec![whole.clone()]).is_empty(), "first sighting of the proof: nothing yet, no retraction");
        assert!(matches!(t.update(vec![whole]).as_slice(), [Change::Raised(f)] if f.id == FindingKey::WholeProcess { pid: 1 }));
    }
}
