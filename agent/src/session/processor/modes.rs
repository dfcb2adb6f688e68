//! What watches the target, tick by tick: the memory scans of scan mode, the re-read after lost
//! events when probes report, and the budget governor's changes between the two.
use std::io;

use super::Processor;
use crate::{
    session::{
        governor::{Activity, Decision, Level, Rates},
        memory::sample_busy_parks,
    },
    sink::{Format, OutputLine, otlp::ModeChange},
};

impl Processor<'_> {
    /// Brings the state up to date before judging, and lets the governor change what is
    /// attached. Whether the state may be judged this tick.
    pub(super) fn refresh(&mut self, now_ns: u64) -> io::Result<bool> {
        if self.level == Level::Scan {
            let due = self.ticks.is_multiple_of(self.cfg.scan_every_ticks()) || self.failed_scans > 0;
            if !due {
                return Ok(false);
            }
            let earlier = self.activity.take();
            if !self.scan()? {
                self.activity = earlier;
                return Ok(false);
            }
            let rates = earlier.and_then(|was| self.load_since(&was, now_ns));
            let decision = match (self.governor.as_mut(), rates) {
                (Some(g), Some(r)) => g.observe_scan(now_ns, &r),
                _ => None,
            };
            return decision.map_or(Ok(true), |d| self.change_level(d, now_ns));
        }
        if std::mem::take(&mut self.resync_pending) && !self.resync()? {
            // Nothing is judged on a state that may miss a wake-up or an exit.
            self.resync_pending = true;
            return Ok(false);
        }
        let decision = match (self.governor.as_mut(), self.probes.hits()) {
            (Some(g), Some(hits)) => g.observe_hits(now_ns, hits),
            _ => None,
        };
        decision.map_or(Ok(true), |d| self.change_level(d, now_ns))
    }

    /// Between ticks: lets the governor step down at once from a burst far over budget.
    pub(super) fn pulse(&mut self, now_ns: u64) -> io::Result<()> {
        if self.level == Level::Scan {
            return Ok(());
        }
        let decision = match (self.governor.as_mut(), self.probes.hits()) {
            (Some(g), Some(hits)) => g.observe_pulse(now_ns, hits),
            _ => None,
        };
        match decision {
            // The next tick judges, on the state this change hands over.
            Some(d) => self.change_level(d, now_ns).map(drop),
            None => Ok(()),
        }
    }

    /// What the last scan says of the load since `earlier`: lower bounds of the hit rates the
    /// probes would have. When the governor might bring probes back, the goroutines whose 8-bit
    /// count moved a lot are sampled closely first (two scans cannot tell 300 parks from 3 million).
    fn load_since(&self, earlier: &Activity, now_ns: u64) -> Option<Rates> {
        let now = self.activity.as_ref()?;
        let rates = now.rates_since(earlier)?;
        if !self.governor.as_ref().is_some_and(|g| g.may_step_up(now_ns)) {
            return Some(rates);
        }
        let busy = now.busy_since(earlier);
        Some(match sample_busy_parks(self.ctx, &busy) {
            Some(parks) => rates.with_parks_at_least(parks),
            None => rates,
        })
    }

    /// Attaches and detaches what `decision` asks for, hands the state over, and says so.
    /// Whether the state may be judged this tick.
    fn change_level(&mut self, decision: Decision, now_ns: u64) -> io::Result<bool> {
        let from = self.level;
        let mut reason = decision.reason;
        let mut attach_failed = false;
        self.level = match self.probes.set_kinds(&self.ctx.binary, decision.to.kinds()) {
            Ok(_) => decision.to,
            Err(e) => {
                // Whatever did attach goes too: scan mode never misses what a probe would see.
                let _ = self.probes.set_kinds(&self.ctx.binary, &[]);
                reason = format!("{reason}; attaching failed ({e}), so memory scans go on");
                attach_failed = true;
                Level::Scan
            }
        };
        if let Some(g) = &mut self.governor {
            if attach_failed {
                g.attach_failed(now_ns);
            }
            g.set_level(self.level);
            // The counters go on from where they stood: the next tick's rates start here.
            if let Some(hits) = self.probes.hits().filter(|_| self.level != Level::Scan) {
                g.observe_hits(now_ns, hits);
            }
        }
        // Down to scan mode: the scans take over now (every wait counts from this read, as no
        // scan saw it park). Up from it: the probes are live before this read, so the events
        // queued after it replay on top of it into the present.
        let fresh = if self.level == Level::Scan || from == Level::Scan {
            let read = self.scan()?;
            if !read && self.level != Level::Scan {
                self.resync_pending = true;
            }
            read
        } else {
            true
        };
        // The governor settling on the first probes, or an attach that left scan mode as it
        // was, is said but not counted as a change.
        let counted = !decision.first_probes && self.level != from;
        self.announce_mode(&reason, decision.estimated_pct, counted)?;
        Ok(fresh)
    }

    /// The `mode` line, its text twin, and the OTLP log record and metrics.
    fn announce_mode(&mut self, reason: &str, estimated_cost_pct: f64, counted: bool) -> io::Result<()> {
        let attached = self.probes.attached_count();
        let budget_pct = self.governor.as_ref().map_or(0.0, |g| g.budget_pct());
        let mode = self.level.name();
        if let Some(x) = &self.otlp {
            x.mode_changed(&ModeChange { mode, reason, attached: attached as u64, estimated_cost_pct, budget_pct, counted });
        }
        let line = match self.cfg.format {
            Format::Json => {
                OutputLine::Mode { pid: self.ctx.pid, mode, reason, estimated_cost_pct, budget_pct, probes_attached: attached }
                    .to_json()?
            }
            Format::Text => format!(
                "goscope: PID {}: mode {mode} ({attached} probes attached): {reason} (budget {budget_pct}% of a CPU)",
                self.ctx.pid
            ),
        };
        if self.cfg.top { Ok(()) } else { self.write(&line) }
    }
}
