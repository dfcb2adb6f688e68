//! Where a goroutine parked and on which sync primitive, from what the park probe captured: the
//! return addresses (symbolized with the target binary, cached by PC) and the semaphore address.
use std::collections::HashMap;

use crate::{
    model::{
        Location,
        events::{EventDetail, GoroutineEvent, ReturnPcs},
        state::{NOTIFY_LIST_LOCK, WaitClass, is_synchronisation_internal, sync_function_class, sync_primitive},
    },
    target::TargetContext,
};

/// What a park event tells once resolved with the binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkDetails {
    /// The innermost frame outside the runtime and the sync packages: the user's call site.
    pub site: Option<Location>,
    /// The sync primitive waited on (Mutex, RWMutex, WaitGroup, Cond).
    pub lock: Option<u64>,
}

/// What one return address contributes to the search, from its logical frames (inlined calls
/// expanded, innermost first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PcFacts {
    /// The first frame outside the synchronisation packages.
    site: Option<Location>,
    /// The class of the innermost sync function before `site`.
    sync_class: Option<WaitClass>,
}

impl PcFacts {
    fn of(frames: Vec<Location>) -> Self {
        let mut facts = Self::default();
        for f in frames {
            if !is_synchronisation_internal(&f.function) {
                facts.site = Some(f);
                break;
            }
            facts.sync_class = facts.sync_class.or_else(|| sync_function_class(&f.function));
        }
        facts
    }
}

/// Most return addresses remembered. Real ones are bounded by the code size, but a frame walk
/// through a corrupt chain could read anything.
const MAX_CACHED_PCS: usize = 1 << 16;

/// Resolves park events; owned by the thread that processes events.
#[derive(Debug, Default)]
pub struct ParkResolver {
    by_pc: HashMap<u64, PcFacts>,
}

impl ParkResolver {
    /// The park site and sync primitive of a `Parked` event; None for other events.
    pub fn resolve(&mut self, ctx: &TargetContext, ev: &GoroutineEvent) -> Option<ParkDetails> {
        let EventDetail::Parked { wait_reason, lock_addr, sema_addr, return_pcs, .. } = ev.detail else {
            return None;
        };
        // A return address is the instruction after the call: look up the call itself.
        let frames = |pc: u64| ctx.binary.symbolize_frames(pc.wrapping_sub(1).wrapping_sub(ctx.load_bias));
        let (site, sync_class) = self.search(&return_pcs, frames);
        let class = match WaitClass::of(ctx.binary.wait_reasons().name(wait_reason).unwrap_or("")) {
            // Before Go 1.21 every sync wait is "semacquire" (WaitGroup until 1.24): the sync
            // function on the stack says which primitive it is.
            WaitClass::Semaphore => sync_class.unwrap_or(WaitClass::Semaphore),
            class => class,
        };
        let runtime_object = match class {
            WaitClass::Cond => lock_addr.checked_sub(NOTIFY_LIST_LOCK),
            class if class.parks_on_semaphore() => Some(sema_addr),
            _ => None,
        };
        Some(ParkDetails { site, lock: sync_primitive(class, runtime_object) })
    }

    /// The park site along `pcs` and the class of the innermost sync function met before it.
    /// `frames` gives a return address's logical frames, innermost first.
    fn search(&mut self, pcs: &ReturnPcs, frames: impl Fn(u64) -> Vec<Location>) -> (Option<Location>, Option<WaitClass>) {
        let mut sync_class = None;
        for &pc in pcs.iter().take_while(|&&pc| pc != 0) {
            let facts = match self.by_pc.get(&pc) {
                Some(facts) => facts.clone(),
                None => {
                    let facts = PcFacts::of(frames(pc));
                    if self.by_pc.len() < MAX_CACHED_PCS {
                        self.by_pc.insert(pc, facts.clone());
                    }
                    facts
                }
            };
            sync_class = sync_class.or(facts.sync_class);
            if facts.site.is_some() {
                return (facts.site, sync_class);
            }
        }
        (None, sync_class)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn frame(function: &str, line: u32) -> Location {
        Location::new(function, "/src/x.go", line)
    }

    fn pcs(list: &[u64]) -> ReturnPcs {
        let mut out = ReturnPcs::default();
        out[..list.len()].copy_from_slice(list);
        out
    }

    /// Go 1.19 Mutex contention: gopark <- semacquire1 <- sync.runtime_SemacquireMutex <-
    /// sync.(*Mutex).lockSlow <- main.lockIt, with sync.(*Mutex).Lock inlined into main.lockIt.
    fn symbolizer(pc: u64) -> Vec<Location> {
        match pc {
            0x10 => vec![frame("runtime.semacquire1", 1)],
            0x20 => vec![frame("sync.runtime_SemacquireMutex", 2)],
            0x30 => vec![frame("sync.(*Mutex).lockSlow", 3)],
            0x40 => vec![frame("sync.(*Mutex).Lock", 4), frame("main.lockIt", 42)],
            0x50 => vec![frame("main.main", 7)],
            _ => Vec::new(),
        }
    }

    #[test]
    fn site_skips_runtime_and_sync_frames_and_inlined_ones() {
        let mut r = ParkResolver::default();
        let (site, class) = r.search(&pcs(&[0x10, 0x20, 0x30, 0x40, 0x50]), symbolizer);
        let site = site.unwrap();
        assert_eq!((site.function.as_str(), site.line), ("main.lockIt", 42));
        assert_eq!(class, Some(WaitClass::Mutex), "the innermost sync function names the primitive");
    }

    #[test]
    fn no_site_when_every_frame_is_internal() {
        let mut r = ParkResolver::default();
        assert_eq!(r.search(&pcs(&[0x10, 0x20]), symbolizer), (None, None));
        assert_eq!(r.search(&pcs(&[]), symbolizer), (None, None));
        // Unknown PCs (no frames) are skipped, not mistaken for a site.
        let (site, _) = r.search(&pcs(&[0x99, 0x50]), symbolizer);
        assert_eq!(site.unwrap().function, "main.main");
    }

    #[test]
    fn symbolizes_each_pc_once() {
        let calls = Cell::new(0);
        let counting = |pc| {
            calls.set(calls.get() + 1);
            symbolizer(pc)
        };
        let mut r = ParkResolver::default();
        let first = r.search(&pcs(&[0x10, 0x20, 0x30, 0x40]), counting);
        assert_eq!(calls.get(), 4);
        assert_eq!(r.search(&pcs(&[0x10, 0x20, 0x30, 0x40]), counting), first);
        assert_eq!(calls.get(), 4, "second search served from the cache");
    }
}
