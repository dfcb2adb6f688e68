//! Probe hits per program, counted from the events they produced, for the health metrics.
use goscope_inspect::{GoBinary, ProbeKind};

use crate::{
    model::events::{EventDetail, GoroutineEvent},
    sink::otlp::ProbeHealth,
};

pub struct ProbeHits {
    /// (program, hits, emulated instruction)
    programs: Vec<(ProbeKind, u64, bool)>,
}

impl ProbeHits {
    pub fn new(binary: &GoBinary) -> Self {
        let mut programs: Vec<(ProbeKind, u64, bool)> = Vec::new();
        // The semaphore probe reports no events of its own: its hits cannot be counted here.
        for site in binary.probe_sites().iter().filter(|s| s.probe != ProbeKind::SemaphoreAcquire) {
            if !programs.iter().any(|p| p.0 == site.probe) {
                programs.push((site.probe, 0, ProbeHealth::is_emulated_instruction(&site.instruction)));
            }
        }
        Self { programs }
    }

    pub fn count(&mut self, ev: &GoroutineEvent) {
        let kind = match ev.detail {
            EventDetail::Created { .. } => ProbeKind::GoroutineCreated,
            EventDetail::Parked { .. } => ProbeKind::GoroutineParked,
            EventDetail::Ready { .. } => ProbeKind::GoroutineReady,
            EventDetail::Exited => ProbeKind::GoroutineExited,
        };
        if let Some(p) = self.programs.iter_mut().find(|p| p.0 == kind) {
            p.1 += 1;
        }
    }

    pub fn health(&self) -> Vec<ProbeHealth> {
        self.programs.iter().map(|&(kind, hits, emulated)| ProbeHealth { name: kind.program_name(), hits, emulated }).collect()
    }
}
