//! The budget governor: keeps what watching costs the target under `--overhead-budget` (a
//! percentage of one CPU). A governed session starts in scan mode: the probes are attached only
//! once two memory scans say they fit, so a busy target never pays for them, not even at attach.
//! The cost is estimated, never measured in the target: hits per second
//! of each probe (counted in BPF) times a cost per hit from [`HitCosts`]. Over budget on two ticks
//! in a row, probes are detached down the [`Level`] ladder to the richest level whose estimate
//! fits (at worst scan mode, which costs the target nothing but memory reads). Back up: only when
//! a lower bound of the event rate read from memory says the probes would fit in half the
//! budget, and not before a back-off that doubles each time a step up had to be undone soon.
use std::{collections::HashMap, time::Duration};

use agent_ebpf::{PROBE_HIT_SLOTS, ProbeHit};
use goscope_inspect::{GoBinary, ProbeKind};

use crate::sink::otlp::ProbeHealth;

/// What is attached, from everything to nothing. Each step down detaches what memory can stand
/// in for: the semaphore probe first (a sync wait's lock address is also read from memory), then
/// the rest (scan mode). The creation probe never goes alone: a goroutine that has not parked
/// since would be missing from the state, and "every user goroutine is stuck" could then be
/// judged on a process that still has a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Every probe.
    Probes,
    /// Every probe but the semaphore probe.
    NoSemaphore,
    /// No probe: periodic memory scans.
    Scan,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Probes, Level::NoSemaphore, Level::Scan];

    /// The name in `mode` lines and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Probes => "probes",
            Self::NoSemaphore => "no_semaphore",
            Self::Scan => "scan",
        }
    }

    /// The probes attached at this level.
    pub fn kinds(self) -> &'static [ProbeKind] {
        const ALL: [ProbeKind; 5] = [
            ProbeKind::GoroutineCreated,
            ProbeKind::GoroutineParked,
            ProbeKind::GoroutineReady,
            ProbeKind::GoroutineExited,
            ProbeKind::SemaphoreAcquire,
        ];
        match self {
            Self::Probes => &ALL,
            Self::NoSemaphore => &ALL[..4],
            Self::Scan => &[],
        }
    }

    fn slots(self) -> impl Iterator<Item = usize> {
        self.kinds().iter().map(|&k| slot(k) as usize)
    }
}

/// The [`agent_ebpf::TargetConfig::hits`] slot a probe counts in.
pub fn slot(kind: ProbeKind) -> ProbeHit {
    match kind {
        ProbeKind::GoroutineCreated => ProbeHit::Created,
        ProbeKind::GoroutineParked => ProbeHit::Parked,
        ProbeKind::GoroutineReady => ProbeHit::Ready,
        ProbeKind::GoroutineExited => ProbeHit::Exited,
        ProbeKind::SemaphoreAcquire => ProbeHit::SemaphoreAcquire,
    }
}

/// The uprobe trap at an instruction the kernel emulates (measured here: ~1.1 µs per hit).
const EMULATED_TRAP_NS: f64 = 1_100.0;
/// The trap at an instruction the kernel single-steps (~5-7 µs).
const SINGLE_STEPPED_TRAP_NS: f64 = 6_000.0;

/// Time the BPF program itself runs per hit (`kernel.bpf_stats_enabled`, ping-pong): gopark's
/// with its return-address walk 0.85 µs, ready 0.54 µs; the others do less.
fn program_ns(kind: ProbeKind) -> f64 {
    match kind {
        ProbeKind::GoroutineParked => 850.0,
        ProbeKind::GoroutineReady => 540.0,
        ProbeKind::GoroutineCreated | ProbeKind::GoroutineExited | ProbeKind::SemaphoreAcquire => 300.0,
    }
}

/// Cost per hit of each probe in the target, by hits slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitCosts([f64; PROBE_HIT_SLOTS]);

impl HitCosts {
    /// From the binary's probe sites: a probe costs what its dearest site costs.
    pub fn of(binary: &GoBinary) -> Self {
        let mut ns = [0.0; PROBE_HIT_SLOTS];
        for site in binary.probe_sites() {
            let trap =
                if ProbeHealth::is_emulated_instruction(&site.instruction) { EMULATED_TRAP_NS } else { SINGLE_STEPPED_TRAP_NS };
            let s = slot(site.probe) as usize;
            ns[s] = f64::max(ns[s], trap + program_ns(site.probe));
        }
        Self(ns)
    }

    /// Nanoseconds of target CPU per second at these hit rates, for the probes of `level`.
    fn cost(&self, rates: &Rates, level: Level) -> f64 {
        level.slots().map(|s| rates.0[s] * self.0[s]).sum()
    }
}

/// Hits per second, by slot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates(pub [f64; PROBE_HIT_SLOTS]);

impl Rates {
    /// Hits per second between two readings of the cumulative counters `elapsed_ns` apart.
    fn between(before: &[u64; PROBE_HIT_SLOTS], after: &[u64; PROBE_HIT_SLOTS], elapsed_ns: u64) -> Self {
        let seconds = elapsed_ns.max(1) as f64 / 1e9;
        let mut rates = [0.0; PROBE_HIT_SLOTS];
        for (r, (now, was)) in rates.iter_mut().zip(after.iter().zip(before)) {
            *r = now.saturating_sub(*was) as f64 / seconds;
        }
        Self(rates)
    }

    /// These rates with parks (and so wake-ups) raised to at least `parks` per second.
    pub fn with_parks_at_least(mut self, parks: f64) -> Self {
        for slot in [ProbeHit::Parked, ProbeHit::Ready] {
            let r = &mut self.0[slot as usize];
            *r = r.max(parks);
        }
        self
    }

    /// What a memory scan tells (lower bounds): `parks` transitions out of running per second
    /// (each a park and, later, a wake-up) and `creations` new goroutines per second (each later
    /// an exit).
    pub fn from_memory(parks: f64, creations: f64) -> Self {
        let mut r = [0.0; PROBE_HIT_SLOTS];
        r[ProbeHit::Parked as usize] = parks;
        r[ProbeHit::Ready as usize] = parks;
        r[ProbeHit::Created as usize] = creations;
        r[ProbeHit::Exited as usize] = creations;
        Self(r)
    }
}

/// What one memory scan shows of how busy the goroutines are: each one's `g.trackingSeq`, and
/// the highest goid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// (goid, `*g`) → trackingSeq.
    pub seqs: HashMap<(u64, u64), u8>,
    pub max_goid: u64,
    /// When the scan began (CLOCK_MONOTONIC ns).
    pub read_ns: u64,
}

impl Activity {
    /// Lower bounds of the probe hit rates between `earlier` and this scan: parks from the
    /// trackingSeq steps of goroutines in both (each step modulo 256: a goroutine that parks more
    /// than 255 times between scans counts less), creations from the goid growth.
    pub fn rates_since(&self, earlier: &Activity) -> Option<Rates> {
        let elapsed = self.read_ns.checked_sub(earlier.read_ns).filter(|&d| d >= MIN_ESTIMATE_WINDOW.as_nanos() as u64)?;
        let seconds = elapsed as f64 / 1e9;
        let steps: u64 =
            self.seqs.iter().filter_map(|(key, &now)| earlier.seqs.get(key).map(|&was| u64::from(now.wrapping_sub(was)))).sum();
        let created = self.max_goid.saturating_sub(earlier.max_goid);
        Some(Rates::from_memory(steps as f64 / seconds, created as f64 / seconds))
    }
}

/// Two scans closer than this tell nothing of the load (the reader's first tick comes right
/// after the scan at attach: a target idle for those milliseconds is not known to be idle).
const MIN_ESTIMATE_WINDOW: Duration = Duration::from_millis(250);

/// A trackingSeq step this large between two scans may be a wrapped count: the goroutine is
/// sampled more closely before the probes come back (see `sample_busy_parks`).
const BUSY_STEPS: u8 = 64;
/// Most goroutines sampled closely.
const MAX_BUSY: usize = 256;

impl Activity {
    /// The `*g` of the goroutines whose trackingSeq moved by [`BUSY_STEPS`] or more since
    /// `earlier` (modulo 256, so perhaps by many times 256), busiest first, and of those new
    /// since then (a new g's trackingSeq starts at a random value, so how much it moved is
    /// unknown: a loop started between the two scans would otherwise look idle).
    pub fn busy_since(&self, earlier: &Activity) -> Vec<u64> {
        let mut busy: Vec<(u8, u64)> = self
            .seqs
            .iter()
            .map(|(key, &now)| (earlier.seqs.get(key).map_or(u8::MAX, |&was| now.wrapping_sub(was)), key.1))
            .filter(|&(steps, _)| steps >= BUSY_STEPS)
            .collect();
        busy.sort_unstable_by(|a, b| b.cmp(a));
        busy.into_iter().take(MAX_BUSY).map(|(_, g)| g).collect()
    }
}

/// A change of level the governor asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub to: Level,
    pub reason: String,
    /// The estimate behind it, in percent of one CPU.
    pub estimated_pct: f64,
    /// The session's first probes (it started in scan mode): the governor settling, not a
    /// change of a settled session's mode.
    pub first_probes: bool,
}

/// Ticks in a row over budget before stepping down.
const OVER_TICKS: u32 = 2;
/// An estimate this many times the budget steps down at once: no burst that large is worth a
/// second tick of its cost.
const FAR_OVER: f64 = 4.0;
/// A pulse looks at a window at least this long.
const MIN_PULSE: Duration = Duration::from_millis(20);
/// First wait after a step down before trying to step up.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A step up undone within this long doubles the back-off; one that lasts resets it.
const SHORT_LIVED: Duration = Duration::from_secs(30);
/// Stepping up needs the estimate at the level above to fit in this share of the budget.
const STEP_UP_SHARE: f64 = 0.5;

#[derive(Debug)]
pub struct Governor {
    budget_ns_per_s: f64,
    costs: HitCosts,
    level: Level,
    over_ticks: u32,
    /// The last hit counters and when they were read.
    last_hits: Option<([u64; PROBE_HIT_SLOTS], u64)>,
    backoff: Duration,
    /// No step up before this.
    next_try_ns: u64,
    /// When the last step up happened (to notice one undone soon).
    stepped_up_ns: Option<u64>,
    /// Whether any probe was attached yet (a governed session starts in scan mode).
    probed_before: bool,
    /// The hit counters at the last pulse (see [`Governor::observe_pulse`]).
    last_pulse: Option<([u64; PROBE_HIT_SLOTS], u64)>,
}

impl Governor {
    /// A governor for `budget_pct` percent of one CPU, starting at `level` at `now_ns` (when
    /// the hit counters are zero).
    pub fn new(budget_pct: f64, costs: HitCosts, level: Level, now_ns: u64) -> Self {
        Self {
            budget_ns_per_s: budget_pct / 100.0 * 1e9,
            costs,
            level,
            over_ticks: 0,
            last_hits: Some(([0; PROBE_HIT_SLOTS], now_ns)),
            backoff: FIRST_BACKOFF,
            next_try_ns: 0,
            stepped_up_ns: None,
            probed_before: level != Level::Scan,
            last_pulse: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// What is attached after all (an attach may fail).
    pub fn set_level(&mut self, level: Level) {
        if level != self.level {
            self.level = level;
            self.last_hits = None;
            self.last_pulse = None;
            self.over_ticks = 0;
        }
    }

    pub fn budget_pct(&self) -> f64 {
        self.budget_ns_per_s / 1e7
    }

    /// With probes attached: the cumulative hit counters read at `now_ns`.
    pub fn observe_hits(&mut self, now_ns: u64, hits: [u64; PROBE_HIT_SLOTS]) -> Option<Decision> {
        let previous = self.last_hits.replace((hits, now_ns));
        let (before, then) = previous?;
        let seconds = now_ns.saturating_sub(then) as f64 / 1e9;
        if seconds <= 0.0 {
            return None;
        }
        let rates = Rates::between(&before, &hits, now_ns.saturating_sub(then));
        let cost = self.costs.cost(&rates, self.level);
        if cost <= self.budget_ns_per_s {
            self.over_ticks = 0;
            return self.maybe_step_up(now_ns, &rates);
        }
        self.over_ticks += 1;
        if self.over_ticks < OVER_TICKS && cost < self.budget_ns_per_s * FAR_OVER {
            return None;
        }
        Some(self.step_down_for(now_ns, &rates, cost))
    }

    /// Down to the richest level whose estimate at `rates` fits.
    fn step_down_for(&mut self, now_ns: u64, rates: &Rates, cost: f64) -> Decision {
        let to = Level::ALL
            .into_iter()
            .filter(|&l| l > self.level)
            .find(|&l| self.costs.cost(rates, l) <= self.budget_ns_per_s)
            .unwrap_or(Level::Scan);
        let reason = format!(
            "estimated cost {:.2}% of a CPU ({:.0} probe hits/s) is over the budget",
            cost / 1e7,
            rates.0.iter().sum::<f64>()
        );
        self.step_down(now_ns, to, reason, cost)
    }

    /// Whether a light enough load would bring probes back now (not while the back-off lasts):
    /// only then is the load worth sampling closely.
    pub fn may_step_up(&self, now_ns: u64) -> bool {
        self.level != Level::Probes && now_ns >= self.next_try_ns
    }

    /// Between ticks, with probes attached: the cumulative hit counters read at `now_ns`. Only
    /// a burst [`FAR_OVER`] the budget steps down here (over at least [`MIN_PULSE`], so a handful
    /// of hits in a short window is not a burst); everything else waits for the tick.
    pub fn observe_pulse(&mut self, now_ns: u64, hits: [u64; PROBE_HIT_SLOTS]) -> Option<Decision> {
        let Some((before, then)) = self.last_pulse else {
            self.last_pulse = Some((hits, now_ns));
            return None;
        };
        let elapsed = now_ns.saturating_sub(then);
        if elapsed < MIN_PULSE.as_nanos() as u64 {
            return None;
        }
        self.last_pulse = Some((hits, now_ns));
        let rates = Rates::between(&before, &hits, elapsed);
        let cost = self.costs.cost(&rates, self.level);
        if cost < self.budget_ns_per_s * FAR_OVER {
            return None;
        }
        Some(self.step_down_for(now_ns, &rates, cost))
    }

    /// In scan mode: a lower bound of the event rate, from memory.
    pub fn observe_scan(&mut self, now_ns: u64, rates: &Rates) -> Option<Decision> {
        self.maybe_step_up(now_ns, rates)
    }

    fn maybe_step_up(&mut self, now_ns: u64, rates: &Rates) -> Option<Decision> {
        if self.level == Level::Probes {
            if self.stepped_up_ns.is_some_and(|t| now_ns.saturating_sub(t) >= SHORT_LIVED.as_nanos() as u64) {
                self.backoff = FIRST_BACKOFF;
                self.stepped_up_ns = None;
            }
            return None;
        }
        if now_ns < self.next_try_ns {
            return None;
        }
        let estimate = self.costs.cost(rates, Level::Probes);
        if estimate > self.budget_ns_per_s * STEP_UP_SHARE {
            return None;
        }
        let first_probes = !std::mem::replace(&mut self.probed_before, true);
        let why = if first_probes { "the load is light" } else { "the load fell" };
        self.level = Level::Probes;
        self.over_ticks = 0;
        self.last_hits = None;
        self.last_pulse = None;
        self.stepped_up_ns = Some(now_ns);
        Some(Decision {
            to: Level::Probes,
            reason: format!(
                "{why}: at least {:.0} events/s would cost about {:.2}% of a CPU",
                rates.0.iter().sum::<f64>(),
                estimate / 1e7
            ),
            estimated_pct: estimate / 1e7,
            first_probes,
        })
    }

    /// Attaching the probes a step up asked for failed: scan mode goes on, and the next try
    /// waits out a back-off that doubles each time (a missing capability does not come back by
    /// itself; a target busy exec'ing or mapping might).
    pub fn attach_failed(&mut self, now_ns: u64) {
        self.level = Level::Scan;
        self.over_ticks = 0;
        self.last_hits = None;
        self.last_pulse = None;
        self.stepped_up_ns = None;
        self.next_try_ns = now_ns + self.backoff.as_nanos() as u64;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn step_down(&mut self, now_ns: u64, to: Level, reason: String, cost: f64) -> Decision {
        if self.stepped_up_ns.take().is_some_and(|t| now_ns.saturating_sub(t) < SHORT_LIVED.as_nanos() as u64) {
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.level = to;
        self.over_ticks = 0;
        self.last_hits = None;
        self.last_pulse = None;
        self.next_try_ns = now_ns + self.backoff.as_nanos() as u64;
        Decision { to, reason, estimated_pct: cost / 1e7, first_probes: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn costs() -> HitCosts {
        // 2 µs per park and ready, 1.5 µs per creation, exit and semaphore acquire.
        HitCosts([1_500.0, 2_000.0, 2_000.0, 1_500.0, 1_500.0])
    }

    fn hits(per_slot: [u64; PROBE_HIT_SLOTS], seconds: u64) -> [u64; PROBE_HIT_SLOTS] {
        per_slot.map(|h| h * seconds)
    }

    #[test]
    fn activity_counts_steps_modulo_256_and_goid_growth() {
        let scan =
            |read_ns, seqs: &[((u64, u64), u8)], max_goid| Activity { seqs: seqs.iter().copied().collect(), max_goid, read_ns };
        let a = scan(0, &[((1, 0x10), 250), ((2, 0x20), 7), ((3, 0x30), 1)], 100);
        // goid 1 wrapped past 255 (+10), goid 2 did not run, goid 3 exited, goid 4 is new.
        let b = scan(S / 2, &[((1, 0x10), 4), ((2, 0x20), 7), ((4, 0x30), 9)], 150);
        let r = b.rates_since(&a).unwrap();
        assert_eq!(r.0[ProbeHit::Parked as usize], 20.0);
        assert_eq!(r.0[ProbeHit::Created as usize], 100.0);
        assert_eq!(a.rates_since(&a), None);
        let soon = Activity { read_ns: S / 10, ..b.clone() };
        assert_eq!(soon.rates_since(&a), None, "100 ms is too short a window to call a target idle");
    }

    #[test]
    fn busy_goroutines_are_those_whose_count_moved_a_lot_and_close_samples_raise_the_estimate() {
        let scan = |seqs: &[((u64, u64), u8)]| Activity { seqs: seqs.iter().copied().collect(), max_goid: 9, read_ns: 0 };
        let a = scan(&[((1, 0x10), 10), ((2, 0x20), 250), ((3, 0x30), 0), ((4, 0x40), 5)]);
        let b = scan(&[((1, 0x10), 200), ((2, 0x20), 70), ((3, 0x30), 63), ((5, 0x50), 255)]);
        assert_eq!(b.busy_since(&a), vec![0x50, 0x10, 0x20], "new, 190 and 76 steps; 63 is not busy");
        let r = Rates::from_memory(100.0, 3.0).with_parks_at_least(2e6);
        assert_eq!((r.0[ProbeHit::Parked as usize], r.0[ProbeHit::Ready as usize]), (2e6, 2e6));
        assert_eq!(r.with_parks_at_least(5.0).0[ProbeHit::Parked as usize], 2e6, "never lowered");
        let mut g = Governor::new(1.0, costs(), Level::Scan, 0);
        assert!(g.may_step_up(0));
        assert_eq!(g.observe_scan(S, &r), None, "2M parks/s stay in scan mode");
    }

    #[test]
    fn a_pulse_steps_down_only_from_a_burst_far_over_budget() {
        const MS: u64 = 1_000_000;
        let mut g = Governor::new(1.0, costs(), Level::Probes, 0);
        assert_eq!(g.observe_pulse(0, [0; 5]), None, "the first pulse is the baseline");
        // 2,000 parks/s for 50 ms (1.6% of a CPU): over, but not far; the tick decides.
        assert_eq!(g.observe_pulse(50 * MS, [0, 100, 100, 0, 0]), None);
        assert_eq!(g.observe_pulse(60 * MS, [0, 10_000, 10_000, 0, 0]), None, "10 ms is too short a window");
        // 100k parks/s over the next 50 ms: scan mode at once.
        let d = g.observe_pulse(100 * MS, [0, 5_100, 5_100, 0, 0]).expect("a burst");
        assert_eq!(d.to, Level::Scan);
        assert!(d.estimated_pct > 4.0, "{d:?}");
        assert_eq!(g.level(), Level::Scan);
    }

    #[test]
    fn a_quiet_target_keeps_every_probe() {
        let mut g = Governor::new(1.0, costs(), Level::Probes, 0);
        for t in 0..10 {
            // 1000 parks and wake-ups a second: 0.4% of a CPU.
            assert_eq!(g.observe_hits(t * S, hits([10, 1000, 1000, 10, 0], t)), None);
        }
        assert_eq!(g.level(), Level::Probes);
    }

    #[test]
    fn a_sustained_load_steps_down_to_what_fits_and_one_tick_does_not() {
        let mut g = Governor::new(1.0, costs(), Level::Probes, 0);
        // One tick of 1500 parks/s (1.2% of a CPU), then quiet again: no change.
        assert_eq!(g.observe_hits(S, hits([0, 1_500, 1_500, 0, 0], 1)), None);
        assert_eq!(g.observe_hits(2 * S, [0, 1_500, 1_500, 0, 0]), None);
        // 100k parks/s (80%): at once.
        assert_eq!(g.observe_hits(3 * S, [0, 101_500, 101_500, 0, 0]).map(|d| d.to), Some(Level::Scan));
        // Semaphore acquisitions alone over budget, twice: only that probe goes.
        let mut g = Governor::new(1.0, costs(), Level::Probes, 0);
        g.observe_hits(0, [0; 5]);
        g.observe_hits(S, hits([0, 100, 100, 0, 10_000], 1));
        let d = g.observe_hits(2 * S, hits([0, 100, 100, 0, 10_000], 2)).expect("a step down");
        assert_eq!(d.to, Level::NoSemaphore);
        assert!(d.estimated_pct > 1.0, "{d:?}");
        // Parks over budget: scan mode.
        let mut g = Governor::new(1.0, costs(), Level::Probes, 0);
        g.observe_hits(S, hits([0, 3_000, 3_000, 0, 0], 1));
        assert_eq!(g.observe_hits(2 * S, hits([0, 3_000, 3_000, 0, 0], 2)).map(|d| d.to), Some(Level::Scan));
    }

    #[test]
    fn a_governor_starting_in_scan_mode_attaches_the_probes_at_the_first_light_estimate() {
        let mut g = Governor::new(1.0, costs(), Level::Scan, 0);
        assert_eq!(g.observe_scan(S / 2, &Rates::from_memory(20_000.0, 500.0)), None, "a busy target stays in scan mode");
        let up = g.observe_scan(S, &Rates::from_memory(100.0, 1.0)).expect("probes when the load fits");
        assert_eq!(up.to, Level::Probes);
        assert!(up.reason.starts_with("the load is light") && up.first_probes, "{up:?}");
        g.observe_hits(S, [0; 5]);
        g.observe_hits(2 * S, hits([0, 50_000, 50_000, 0, 0], 1)).expect("down: far over");
        let again = g.observe_scan(40 * S, &Rates::from_memory(100.0, 1.0)).expect("up after the back-off");
        assert!(again.reason.starts_with("the load fell") && !again.first_probes, "{again:?}");
    }

    #[test]
    fn a_failed_attach_waits_out_a_growing_back_off() {
        let quiet = Rates::from_memory(100.0, 1.0);
        let mut g = Governor::new(1.0, costs(), Level::Scan, 0);
        assert!(g.observe_scan(S, &quiet).is_some());
        g.attach_failed(S);
        assert_eq!(g.level(), Level::Scan);
        assert_eq!(g.observe_scan(5 * S, &quiet), None, "within the first back-off");
        assert!(g.observe_scan(11 * S, &quiet).is_some(), "tried again after 10 s");
        g.attach_failed(11 * S);
        assert_eq!(g.observe_scan(25 * S, &quiet), None, "20 s now");
        assert!(g.observe_scan(31 * S, &quiet).is_some());
    }

    #[test]
    fn steps_up_after_the_back_off_when_memory_says_the_load_fell_and_backs_off_longer_after_a_relapse() {
        let mut g = Governor::new(1.0, costs(), Level::Probes, 0);
        g.observe_hits(S, hits([0, 3_000, 3_000, 0, 0], 1));
        g.observe_hits(2 * S, hits([0, 3_000, 3_000, 0, 0], 2)).expect("down");
        let busy = Rates::from_memory(20_000.0, 0.0);
        let quiet = Rates::from_memory(100.0, 1.0);
        assert_eq!(g.observe_scan(5 * S, &quiet), None, "within the back-off");
        assert_eq!(g.observe_scan(13 * S, &busy), None, "still busy");
        assert_eq!(g.observe_scan(13 * S, &quiet).map(|d| d.to), Some(Level::Probes));
        // The load returns at once: down again, and the next try waits twice as long.
        g.observe_hits(13 * S, [0; 5]);
        g.observe_hits(14 * S, hits([0, 50_000, 50_000, 0, 0], 1)).expect("down again, at once: far over");
        assert_eq!(g.observe_hits(15 * S, hits([0, 50_000, 50_000, 0, 0], 2)), None, "already in scan mode");
        assert_eq!(g.observe_scan(30 * S, &quiet), None, "20 s back-off");
        assert_eq!(g.observe_scan(35 * S, &quiet).map(|d| d.to), Some(Level::Probes));
    }
}
