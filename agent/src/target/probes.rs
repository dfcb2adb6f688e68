//! Loads goscope's eBPF programs once and attaches them to target processes. Per target, the
//! runtime offsets the probes need go into the TARGETS map; the probes ignore every other process.
use std::{
    collections::HashMap as StdHashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use agent_ebpf::{LOST_MAP, TARGETS_MAP, TargetConfig};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use goscope_inspect::{GoBinary, ProbeKind, ProbeSite};

use crate::target::{
    Target,
    privilege::{Operation, hint},
};

/// The eBPF object built by build.rs from agent-ebpf.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/goscope-probes"));

const PROGRAMS: [ProbeKind; 5] = [
    ProbeKind::GoroutineCreated,
    ProbeKind::GoroutineParked,
    ProbeKind::GoroutineReady,
    ProbeKind::GoroutineExited,
    ProbeKind::SemaphoreAcquire,
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the eBPF programs failed: {source} ({hint}; and a kernel with BTF and BPF ring buffers)")]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
        hint: String,
    },
    #[error("eBPF program {name}: {source} ({hint})")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
        hint: String,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the embedded eBPF object has no {0} (the build is broken: rebuild goscope)")]
    Missing(&'static str),
    #[error("the binary has no probe site for {0:?}")]
    NoSite(ProbeKind),
    #[error("attaching {program} at {symbol}+{offset} failed: {source} ({hint})")]
    Attach {
        program: &'static str,
        symbol: String,
        offset: u64,
        #[source]
        source: Box<ProgramError>,
        hint: String,
    },
}

/// How the uprobes attach: decides the privilege goscope needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPath {
    /// `uprobe.multi` programs through BPF links (kernel 6.6+, whose pid filter covers the
    /// whole process): CAP_BPF + CAP_PERFMON.
    MultiLink,
    /// One perf event of the uprobe PMU per site: its `perf_event_open` needs CAP_SYS_ADMIN
    /// (measured on 6.18; CAP_PERFMON is not enough).
    PerfEvent,
}

impl AttachPath {
    /// The multi-link path when the embedded object has a `_multi` twin of every program and the
    /// kernel filters such links on the whole process.
    fn choose(ebpf: &Ebpf) -> Self {
        let twins = PROGRAMS.iter().all(|k| ebpf.program(multi_program_name(*k)).is_some());
        let kernel =
            || aya::sys::is_uprobe_multi_supported(aya::sys::UProbeMultiFeature::ProcessScopedPidFilter).unwrap_or(false);
        if twins && kernel() { Self::MultiLink } else { Self::PerfEvent }
    }

    fn program_name(self, kind: ProbeKind) -> &'static str {
        match self {
            Self::MultiLink => multi_program_name(kind),
            Self::PerfEvent => kind.program_name(),
        }
    }

    fn operation(self) -> Operation {
        match self {
            Self::MultiLink => Operation::AttachUprobeLinks,
            Self::PerfEvent => Operation::AttachPerfUprobes,
        }
    }
}

/// The `uprobe.multi` twin of a probe's program in agent-ebpf.
fn multi_program_name(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::GoroutineCreated => "goroutine_created_multi",
        ProbeKind::GoroutineParked => "goroutine_parked_multi",
        ProbeKind::GoroutineReady => "goroutine_ready_multi",
        ProbeKind::GoroutineExited => "goroutine_exited_multi",
        ProbeKind::SemaphoreAcquire => "semaphore_acquire_multi",
    }
}

/// The loaded programs and maps. Dropping it detaches every probe and frees the maps.
pub struct Probes {
    ebpf: Ebpf,
    path: AttachPath,
    targets: HashMap<MapData, u32, TargetConfig>,
    lost: PerCpuArray<MapData, u64>,
    links: StdHashMap<u32, Vec<(ProbeKind, UProbeLinkId)>>,
    /// The probes' aya-log records (read failures), passed to the `log` crate's logger on each
    /// [`Probes::flush_log`]; None when the object has no log map.
    log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Probes {
    /// Loads (but does not attach) the programs. `ring_bytes` sizes the event ring buffer.
    pub fn load(ring_bytes: u32) -> Result<(Self, RingBuf<MapData>), ProbeError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(agent_ebpf::EVENTS_MAP, ring_bytes)
            // Probes wake the reader only past a quarter of the ring (see session::reader::RING_POLL_PERIOD).
            .override_global(agent_ebpf::WAKEUP_BYTES_GLOBAL, &(u64::from(ring_bytes) / 4), true)
            .load(PROBES_OBJECT)
            .map_err(|e| ProbeError::Load { hint: hint(Operation::LoadEbpf, &e), source: Box::new(e) })?;
        let path = AttachPath::choose(&ebpf);
        for kind in PROGRAMS {
            let name = path.program_name(kind);
            uprobe(&mut ebpf, name)?.load().map_err(|e| ProbeError::Program {
                name,
                hint: hint(Operation::LoadEbpf, &e),
                source: Box::new(e),
            })?;
        }
        let events = take_map(&mut ebpf, agent_ebpf::EVENTS_MAP)?;
        let events = RingBuf::try_from(events).map_err(|source| ProbeError::Map { name: agent_ebpf::EVENTS_MAP, source })?;
        let targets = take_map(&mut ebpf, TARGETS_MAP)?;
        let targets = HashMap::try_from(targets).map_err(|source| ProbeError::Map { name: TARGETS_MAP, source })?;
        let lost = take_map(&mut ebpf, LOST_MAP)?;
        let lost = PerCpuArray::try_from(lost).map_err(|source| ProbeError::Map { name: LOST_MAP, source })?;
        // Logging is a diagnostic: without it the failures are still counted.
        let log = aya_log::EbpfLogger::init(&mut ebpf).inspect_err(|e| log::debug!("the probes' log is not available: {e}")).ok();
        Ok((Self { ebpf, path, targets, lost, links: StdHashMap::new(), log }, events))
    }

    /// How the probes attach (and so what privilege they need).
    pub fn attach_path(&self) -> AttachPath {
        self.path
    }

    /// Attaches every probe to `target` at the sites `binary` chose. On error nothing stays
    /// attached to the target.
    pub fn attach(&mut self, target: &Target, binary: &GoBinary, config: TargetConfig) -> Result<(), ProbeError> {
        self.attach_only(target, binary, config, &PROGRAMS)
    }

    /// [`Probes::attach`] with the probes of `kinds` only.
    pub fn attach_only(
        &mut self,
        target: &Target,
        binary: &GoBinary,
        config: TargetConfig,
        kinds: &[ProbeKind],
    ) -> Result<(), ProbeError> {
        let pid = target.pid;
        self.register(pid, config)?;
        let result = self.attach_kinds(target, binary, kinds);
        if result.is_err() {
            self.detach(pid);
        }
        result
    }

    /// Gives the probes `pid`'s config without attaching any (scan mode: the governor may
    /// attach them later).
    pub fn register(&mut self, pid: u32, config: TargetConfig) -> Result<(), ProbeError> {
        self.targets.insert(&pid, &config, 0).map_err(|source| ProbeError::Map { name: TARGETS_MAP, source })?;
        self.links.entry(pid).or_default();
        Ok(())
    }

    /// Attaches the probes of `kinds` that are not attached to `target` yet (its config must be
    /// in place: [`Probes::attach`] first). On error, what did attach stays attached.
    pub fn attach_kinds(&mut self, target: &Target, binary: &GoBinary, kinds: &[ProbeKind]) -> Result<(), ProbeError> {
        let pid = target.pid;
        let attached: Vec<ProbeKind> = self.links.get(&pid).into_iter().flatten().map(|(k, _)| *k).collect();
        // Exited first, created last: a goroutine created between two attaches and gone before
        // the memory snapshot would otherwise leave a `created` with no `exited`, for good. In
        // this order every goroutine with a `created` event also has its `exited` probe live
        // (and semacquire1's probe is live before gopark's).
        let wanted = PROGRAMS.into_iter().rev().filter(|k| kinds.contains(k) && !attached.contains(k));
        wanted.into_iter().try_for_each(|kind| {
            let sites: Vec<&ProbeSite> = binary.probe_sites().iter().filter(|s| s.probe == kind).collect();
            if sites.is_empty() {
                return Err(ProbeError::NoSite(kind));
            }
            let name = self.path.program_name(kind);
            let operation = self.path.operation();
            let program = uprobe(&mut self.ebpf, name)?;
            let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
            // The cookie tells a probe which register holds its value at that site (creation
            // sites differ: RAX after newproc1 returns, RBX at newproc's call to runqput).
            let locations = sites.iter().map(|s| UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(s.file_offset),
                cookie: s.value_register.map(u64::from),
            });
            let link = program.attach(locations, &target.exe, scope).map_err(|e| ProbeError::Attach {
                program: name,
                symbol: sites[0].symbol.clone(),
                offset: sites[0].offset,
                hint: hint(operation, &e),
                source: Box::new(e),
            })?;
            self.links.entry(pid).or_default().push((kind, link));
            Ok(())
        })
    }

    /// Detaches the probes of `kinds` from `pid` (its config stays: they can come back).
    pub fn detach_kinds(&mut self, pid: u32, kinds: &[ProbeKind]) {
        let links = self.links.remove(&pid).unwrap_or_default();
        let (going, staying): (Vec<_>, Vec<_>) = links.into_iter().partition(|(k, _)| kinds.contains(k));
        self.links.insert(pid, staying);
        for (kind, link) in going {
            if let Ok(program) = uprobe(&mut self.ebpf, self.path.program_name(kind)) {
                // The target may have exited already; then the kernel dropped the probe itself.
                let _ = program.detach(link);
            }
        }
    }

    /// Probe programs attached to `pid` now.
    pub fn attached_count(&self, pid: u32) -> usize {
        self.links.get(&pid).map_or(0, Vec::len)
    }

    /// Detaches every probe of `pid` and forgets its config. Safe to call twice.
    pub fn detach(&mut self, pid: u32) {
        self.detach_kinds(pid, &PROGRAMS);
        self.links.remove(&pid);
        let _ = self.targets.remove(&pid);
    }

    /// Probe hits in `pid` since it was attached, indexed by [`agent_ebpf::ProbeHit`]; None when
    /// `pid` is not attached.
    pub fn hits(&self, pid: u32) -> Option<[u64; agent_ebpf::PROBE_HIT_SLOTS]> {
        self.targets.get(&pid, 0).ok().map(|config| config.hits)
    }

    /// Hits in `pid` whose probe could not read the target's memory, indexed by
    /// [`agent_ebpf::ProbeHit`]; None when `pid` is not attached.
    pub fn read_failures(&self, pid: u32) -> Option<[u64; agent_ebpf::PROBE_HIT_SLOTS]> {
        self.targets.get(&pid, 0).ok().map(|config| config.read_failures)
    }

    /// Passes the probes' log records (rate-limited read failures) to the logger. Cheap when
    /// there are none: a look at the log ring's positions, no system call.
    pub fn flush_log(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
    }

    /// Events the probes could not deliver because the ring buffer was full, summed over CPUs.
    pub fn lost_events(&self) -> u64 {
        self.lost.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    let program = ebpf.program_mut(name).ok_or(ProbeError::Missing(name))?;
    program.try_into().map_err(|e| ProbeError::Program { name, hint: hint(Operation::LoadEbpf, &e), source: Box::new(e) })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing(name))
}

/// The probes of one target, shared by its reader (loss counters) and its processor (whose
/// governor attaches and detaches them).
#[derive(Clone)]
pub struct TargetProbes {
    pub probes: Arc<Mutex<Probes>>,
    pub target: Target,
}

impl TargetProbes {
    fn lock(&self) -> MutexGuard<'_, Probes> {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The target's probe hit counters (see [`Probes::hits`]).
    pub fn hits(&self) -> Option<[u64; agent_ebpf::PROBE_HIT_SLOTS]> {
        self.lock().hits(self.target.pid)
    }

    /// Makes `kinds` exactly the attached probes; returns how many are attached after (also
    /// after an error: what attached stays).
    pub fn set_kinds(&self, binary: &GoBinary, kinds: &[ProbeKind]) -> Result<usize, ProbeError> {
        let mut probes = self.lock();
        let pid = self.target.pid;
        let going: Vec<ProbeKind> = PROGRAMS.into_iter().filter(|k| !kinds.contains(k)).collect();
        probes.detach_kinds(pid, &going);
        let result = probes.attach_kinds(&self.target, binary, kinds);
        let count = probes.attached_count(pid);
        result.map(|()| count)
    }

    /// Probe programs attached now.
    pub fn attached_count(&self) -> usize {
        self.lock().attached_count(self.target.pid)
    }
}
