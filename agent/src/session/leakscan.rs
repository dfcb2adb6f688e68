//! Runs the reachability analysis (goscope-memory's `find_leaked`) on ticks, off the event path,
//! and turns complete analyses into the evidence the proven-leak detector judges. Two analyses
//! must agree before anything counts, so a reference that only a register held for a moment, or
//! a goroutine caught between two states, cannot make a leak.
use goscope_memory::{Incomplete, ProcessMemory, ReachError, ReachGoroutine, ReachOptions};

use crate::{detect::LeakEvidence, model::state::ProcessState, target::TargetContext};

/// Analyses while suspects await confirmation: every this many ticks.
const CONFIRM_EVERY_TICKS: u64 = 2;
/// Analyses while the candidates are explained or unchanged.
const REFRESH_EVERY_TICKS: u64 = 20;
/// After an incomplete analysis (the heap was too large for the budget), wait this long.
const BACKOFF_TICKS: u64 = 120;
/// After a read that failed on a moving target (a torn read, a goroutine list being grown).
const RETRY_TICKS: u64 = 4;
/// Incomplete analyses in a row before a warning says why leaks stay unproven.
const WARN_AFTER_INCOMPLETE: u32 = 3;

/// Why an analysis proved nothing, and when trying again makes sense.
enum NoProof {
    /// The target moved under the read: try again soon, say nothing.
    Transient,
    /// Reachable memory could not be read: try again soon, say so if it keeps happening.
    Incomplete(String),
    /// Past the budget: try again after BACKOFF_TICKS.
    TooLarge(String),
    /// This binary cannot be analysed (stripped, unsupported): never again.
    Impossible(String),
}

/// What the last analyses showed, and when to run the next.
#[derive(Debug)]
pub struct LeakScanner {
    options: ReachOptions,
    /// The newest complete analysis, and what it and the one before agree on.
    newest: Option<LeakEvidence>,
    confirmed: Option<LeakEvidence>,
    /// Candidates the newest analysis judged, to notice new ones.
    judged: Vec<u64>,
    next_tick: u64,
    /// Analyses in a row that could not read everything reachable.
    incomplete_in_a_row: u32,
    /// Why the last analysis proved nothing, once (for a warning line).
    pub unavailable: Option<String>,
}

impl LeakScanner {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            options: ReachOptions { max_bytes, ..ReachOptions::default() },
            newest: None,
            confirmed: None,
            judged: Vec::new(),
            next_tick: 0,
            incomplete_in_a_row: 0,
            unavailable: None,
        }
    }

    /// Runs an analysis when one is due (there are goroutines blocked past the threshold that
    /// the evidence does not cover yet, or a refresh is due); returns evidence two complete
    /// analyses agree on, or None when there is none (the suspect detectors stand in).
    pub fn update(
        &mut self,
        state: &ProcessState,
        ctx: &TargetContext,
        tick: u64,
        now_ns: u64,
        threshold_ns: u64,
    ) -> Option<&LeakEvidence> {
        let mut candidates: Vec<u64> = state
            .goroutines()
            .filter(|g| now_ns.saturating_sub(g.since_ns) >= threshold_ns)
            .filter(|g| g.wait.as_ref().is_some_and(|w| w.class.is_user_blocking()))
            .map(|g| g.goid)
            .collect();
        candidates.sort_unstable();
        if candidates.is_empty() {
            self.newest = None;
            self.confirmed = None;
            self.judged.clear();
            return None;
        }
        let new_candidates = candidates.iter().any(|g| self.judged.binary_search(g).is_err());
        if tick >= self.next_tick || (new_candidates && self.unavailable.is_none()) {
            self.analyse(state, ctx, tick);
            self.judged = candidates;
        }
        self.confirmed.as_ref()
    }

    fn analyse(&mut self, state: &ProcessState, ctx: &TargetContext, tick: u64) {
        match analysis(state, ctx, &self.options) {
            Ok(newer) => {
                self.incomplete_in_a_row = 0;
                self.confirmed = self.newest.as_ref().map(|older| older.confirmed_by(&newer));
                let awaiting = !newer.leaked.is_empty() && self.confirmed.as_ref().is_none_or(|c| c.leaked != newer.leaked);
                self.next_tick = tick + if awaiting { CONFIRM_EVERY_TICKS } else { REFRESH_EVERY_TICKS };
                self.newest = Some(newer);
                self.unavailable = None;
            }
            Err(no_proof) => {
                self.newest = None;
                self.confirmed = None;
                (self.next_tick, self.unavailable) = match no_proof {
                    NoProof::Transient => (tick + RETRY_TICKS, None),
                    NoProof::Incomplete(why) => {
                        self.incomplete_in_a_row += 1;
                        (tick + RETRY_TICKS, (self.incomplete_in_a_row >= WARN_AFTER_INCOMPLETE).then_some(why))
                    }
                    NoProof::TooLarge(why) => (tick + BACKOFF_TICKS, Some(why)),
                    NoProof::Impossible(why) => (u64::MAX, Some(why)),
                };
            }
        }
    }
}

/// One analysis of the process as it is now: every goroutine from memory, each a root or
/// blocked on the objects the state (probes) or memory (sudogs) name.
fn analysis(state: &ProcessState, ctx: &TargetContext, options: &ReachOptions) -> Result<LeakEvidence, NoProof> {
    // The analysis enforces `max_bytes` itself; the reader's own cap only has to leave room for
    // it on top of the snapshot, or it would be the limit that stops the proof.
    let mem = ProcessMemory::new(ctx.pid)
        .map_err(|_| NoProof::Transient)?
        .with_budget(options.max_bytes.saturating_add(goscope_memory::DEFAULT_BUDGET));
    let opts = goscope_memory::SnapshotOptions { stacks: false, ..goscope_memory::SnapshotOptions::default() };
    let snap = goscope_memory::snapshot_with(&mem, &ctx.binary, ctx.load_bias, &opts).map_err(|_| NoProof::Transient)?;
    let goroutines: Vec<ReachGoroutine> = snap
        .goroutines
        .iter()
        .filter_map(|g| {
            // Before Go 1.26 memory does not tell which lock a sync wait is for; the park probe
            // did, if the wait began after the attach (and is the same wait).
            let probed_lock = state
                .goroutine(g.goid)
                .and_then(|s| s.wait.as_ref())
                .filter(|w| Some(w.reason_code) == g.wait_reason_code)
                .and_then(|w| w.lock);
            ReachGoroutine::from_goroutine(g, probed_lock)
        })
        .collect();
    let too_large = |read: u64| {
        NoProof::TooLarge(format!(
            "the heap reachable from the goroutines exceeds the scan budget of {} MiB (--leak-scan-budget-mib; {} MiB \
             read); leaks stay suspects",
            options.max_bytes >> 20,
            read >> 20
        ))
    };
    let report = goscope_memory::find_leaked(&mem, &ctx.binary, ctx.load_bias, &goroutines, options).map_err(|e| match e {
        e if e.is_budget() => too_large(mem.stats().bytes),
        ReachError::NeedsSymbols(_) | ReachError::MissingOffset(_) | ReachError::UnsupportedArch(_) => {
            NoProof::Impossible(format!("{e}; leaks and deadlocks stay suspects"))
        }
        _ => NoProof::Transient,
    })?;
    match report.incomplete {
        None => {}
        Some(Incomplete::Budget { .. }) => return Err(too_large(report.bytes_read)),
        // Memory freed or moved under the read: the next analysis may well complete.
        Some(why) => return Err(NoProof::Incomplete(format!("the leak proof stopped short: {why}; leaks stay suspects"))),
    }
    Ok(LeakEvidence {
        leaked: report.leaked.iter().copied().collect(),
        could_wake: report.could_wake,
        since_ns: snap.read_start_ns,
    })
}
