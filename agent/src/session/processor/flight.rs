//! The flight recorder's side of the processor (`--flight-recorder`): what each event and scan
//! puts in the ring, and the trace file written for each raised deadlock or leak finding. None
//! of it runs without the flag.
use std::io;

use super::Processor;
use crate::{
    detect::FindingType,
    model::{
        events::{EventDetail, GoroutineEvent},
        hex,
        park::ParkDetails,
        state::{GoState, Goroutine},
    },
    session::{findings::Change, governor::Level},
    sink::{
        top::called_by_go_wrapper,
        trace::{self, Alive, Block, Doing, Moment, TraceInput, What},
    },
    target::TargetContext,
};

impl Processor<'_> {
    /// Puts an applied event in the ring.
    pub(super) fn record_event(&mut self, ev: &GoroutineEvent, park: Option<&ParkDetails>) {
        let Some(flight) = &mut self.flight else { return };
        let what = match ev.detail {
            EventDetail::Created { parent_goid, start_pc, .. } => {
                What::Created { parent_goid, start_function: self.ctx.symbolize(start_pc).map(|l| l.function) }
            }
            EventDetail::Parked { wait_reason, lock_addr, .. } => {
                let reason = self.ctx.wait_reason(wait_reason);
                let on = self
                    .ctx
                    .channel(&reason, lock_addr)
                    .map(|c| format!("chan {}", hex(c)))
                    .or_else(|| park.and_then(|p| p.lock).map(|l| format!("lock {}", hex(l))));
                let synchronisation = self.state.reasons().class(wait_reason).is_user_blocking();
                What::Parked(Block { reason, on, site: park.and_then(|p| p.site.clone()), synchronisation })
            }
            EventDetail::Ready { waker_goid } => What::Ready { waker_goid },
            EventDetail::Exited => What::Exited,
        };
        flight.record(Moment { ts_ns: ev.ts_ns, goid: ev.goid, what });
    }

    /// Puts what a memory read just saw of every goroutine in the ring (scan mode's only record).
    pub(super) fn record_samples(&mut self) {
        let Some(flight) = &mut self.flight else { return };
        let ts_ns = goscope_memory::monotonic_ns();
        for g in self.state.goroutines() {
            flight.record(Moment { ts_ns, goid: g.goid, what: What::Sampled(doing(g, self.ctx)) });
        }
    }

    /// With `--flight-recorder`: each raised deadlock or leak finding's recent past, as a Chrome
    /// trace file. A file that cannot be written is a warning, not the end of the session.
    pub(super) fn write_traces(&mut self, changes: &[Change], now_ns: u64) -> io::Result<()> {
        let (Some(dir), Some(flight)) = (self.cfg.flight_recorder.clone(), &self.flight) else { return Ok(()) };
        let mut failures = Vec::new();
        for change in changes {
            let Change::Raised(f) = change else { continue };
            if f.finding_type == FindingType::Blocked {
                continue;
            }
            let alive = self
                .state
                .goroutines()
                .map(|g| Alive {
                    goid: g.goid,
                    start_function: start_function(g, flight.start_function(g.goid), self.ctx),
                    since_ns: g.since_ns,
                    doing: doing(g, self.ctx),
                })
                .collect();
            let input = TraceInput {
                pid: self.ctx.pid,
                finding: f,
                now_ns,
                window_ns: flight.window_ns(),
                moments: flight.recent(now_ns),
                alive,
                created_start_functions: flight.start_functions(),
                from_events: self.level != Level::Scan,
                evicted: flight.evicted(),
            };
            let path = dir.join(trace::file_name(f));
            let written = serde_json::to_vec(&trace::chrome_trace(&input))
                .map_err(io::Error::other)
                .and_then(|bytes| std::fs::write(&path, bytes));
            if let Err(e) = written {
                failures.push(format!("cannot write the flight recorder's trace {}: {e}", path.display()));
            }
        }
        for failure in failures {
            self.warn(&failure)?;
        }
        Ok(())
    }
}

/// The function `g` runs: for a `go f(args)` wrapper (`main.main.gowrap1`), `f` when the
/// stack read from memory shows it.
fn start_function(g: &Goroutine, recorded: Option<&str>, ctx: &TargetContext) -> Option<String> {
    let start = recorded.map(str::to_owned).or_else(|| g.start_pc.and_then(|pc| ctx.symbolize(pc)).map(|l| l.function))?;
    let stack = g.wait.as_ref().map_or(&[][..], |w| w.stack.as_slice());
    Some(called_by_go_wrapper(&start, stack).unwrap_or(start))
}

/// What the state shows `g` doing.
fn doing(g: &Goroutine, ctx: &TargetContext) -> Doing {
    match (g.state, &g.wait) {
        (GoState::Waiting, Some(w)) => {
            let on =
                w.channels.first().map(|c| format!("chan {}", hex(*c))).or_else(|| w.lock.map(|l| format!("lock {}", hex(l))));
            Doing::Blocked(Block {
                reason: ctx.wait_reason(w.reason_code),
                on,
                site: w.site().cloned(),
                synchronisation: w.class.is_user_blocking(),
            })
        }
        (GoState::Waiting, None) => {
            Doing::Blocked(Block { reason: "waiting".into(), on: None, site: None, synchronisation: false })
        }
        (GoState::Syscall, _) => Doing::Syscall,
        (GoState::Runnable | GoState::Running, _) => Doing::RunnableOrRunning,
    }
}
