//! Probe hits per program, counted from the events they produced, and the probes' failed reads
//! of the target's memory (counted in BPF), for the health metrics and the first-failure warning.
use agent_ebpf::{PROBE_HIT_SLOTS, ProbeHit};
use goscope_inspect::{GoBinary, ProbeKind};

use crate::{
    model::events::{EventDetail, GoroutineEvent},
    sink::otlp::ProbeHealth,
};

pub struct ProbeHits {
    /// (program, hits, emulated instruction)
    programs: Vec<(ProbeKind, u64, bool)>,
    /// Failed reads by [`ProbeHit`] slot, as of the last [`ProbeHits::read_failures`].
    read_failures: [u64; PROBE_HIT_SLOTS],
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
        Self { programs, read_failures: [0; PROBE_HIT_SLOTS] }
    }

    /// Takes the probes' latest failed-read counts; returns a warning for each probe whose reads
    /// failed for the first time (an offset wrong for the target's Go release shows up here).
    pub fn read_failures(&mut self, now: &[u64; PROBE_HIT_SLOTS]) -> Vec<String> {
        let first: Vec<String> = ProbeHit::ALL
            .iter()
            .filter(|&&probe| self.read_failures[probe as usize] == 0 && now[probe as usize] > 0)
            .map(|&probe| {
                format!(
                    "probe {}: {} of its reads of the target's memory failed, and their events were dropped \
                     (a runtime offset may be wrong for this Go release); findings still come from memory scans",
                    probe.program_name(),
                    now[probe as usize]
                )
            })
            .collect();
        self.read_failures = *now;
        first
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
        self.programs
            .iter()
            .map(|&(kind, hits, emulated)| ProbeHealth {
                name: kind.program_name(),
                hits,
                emulated,
                read_failures: ProbeHit::ALL
                    .iter()
                    .find(|p| p.program_name() == kind.program_name())
                    .map_or(0, |&p| self.read_failures[p as usize]),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_of_each_probe_is_announced_once() {
        let mut hits = ProbeHits { programs: vec![(ProbeKind::GoroutineParked, 0, true)], read_failures: [0; PROBE_HIT_SLOTS] };
        assert!(hits.read_failures(&[0; PROBE_HIT_SLOTS]).is_empty());
        let warnings = hits.read_failures(&[0, 3, 0, 0, 0]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("probe goroutine_parked: 3 of its reads"), "{}", warnings[0]);
        assert!(hits.read_failures(&[0, 9, 0, 0, 0]).is_empty(), "announced once");
        let warnings = hits.read_failures(&[0, 9, 0, 0, 1]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("probe semaphore_acquire:"), "{}", warnings[0]);
        assert_eq!(hits.health()[0].read_failures, 9);
    }
}
