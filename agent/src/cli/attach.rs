//! `goscope attach`: inspect the target, attach the probes, run one session until stopped.
use std::{
    io::{self, Write as _},
    sync::{Arc, Mutex, PoisonError},
};

use agent_ebpf::{ReturnAddress, TargetConfig};
use aya::maps::{MapData, RingBuf};
use goscope_inspect::{GoBinary, ProbeKind, ReturnAddressAt};
use tokio::sync::{Notify, mpsc, watch};

use crate::{
    detect::FindingType,
    model::state::WaitReasons,
    session::{
        SessionConfig,
        processor::{ProcessStats, process},
        reader::{ReadStats, read_events},
    },
    sink::{
        Format, OutputLine,
        json::{AttachedProbe, WatchMode},
        otlp::ProcessInfo,
        warning_line, write_line,
    },
    target::{
        ExecutableCache, Target, TargetContext, TargetError,
        k8s::K8sLookup,
        probes::{ProbeError, Probes, TargetProbes},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{path}: {source}")]
    Binary {
        path: String,
        #[source]
        source: goscope_inspect::InspectError,
    },
    #[error("PID {pid} ({exe}) runs {version}, which goscope cannot watch: {reasons}")]
    Unsupported { pid: u32, exe: String, version: String, reasons: String },
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a {} finding was made (--fail-on {})", .0.as_str(), .0.as_str())]
    FailOn(FindingType),
}

/// Test knob (not a user setting): when this variable is set, the probes get a `g.goid` offset
/// far outside any goroutine, as a layout wrong for a new Go release would give them, so that
/// their reads fail; tests check such failures are counted and reported.
const BREAK_PROBE_READS: &str = "GOSCOPE_TEST_BREAK_PROBE_READS";
/// An offset no read through a real pointer survives (past the end of the address space).
const BROKEN_OFFSET: u32 = 0xfff0_0000;

/// What the probes need to know about the target's runtime.
fn target_config(binary: &GoBinary) -> TargetConfig {
    let l = binary.layout();
    let park_site = binary.probe_sites().iter().find(|s| s.probe == ProbeKind::GoroutineParked);
    let park_return_address = match park_site.map(|s| s.return_address) {
        Some(ReturnAddressAt::StackPointer) => ReturnAddress::AtStackPointer,
        Some(ReturnAddressAt::FramePointer) => ReturnAddress::AboveFramePointer,
        Some(ReturnAddressAt::Unknown) | None => ReturnAddress::Unknown,
    };
    TargetConfig {
        g_goid: if std::env::var_os(BREAK_PROBE_READS).is_some() { BROKEN_OFFSET } else { l.g_goid },
        g_parent_goid: l.g_parent_goid.unwrap_or(0),
        g_m: l.g_m,
        g_gopc: l.g_gopc,
        g_startpc: l.g_startpc,
        m_curg: l.m_curg,
        park_return_address: park_return_address as u32,
        _pad: 0,
        sema_wait_reasons: WaitReasons::of(binary.wait_reasons()).semaphore_codes(),
        hits: [0; agent_ebpf::PROBE_HIT_SLOTS],
        read_failures: [0; agent_ebpf::PROBE_HIT_SLOTS],
    }
}

/// Watches `pid` until a signal, `--duration`, a `--fail-on` finding, or the target's exit.
pub async fn run(pid: u32, cfg: SessionConfig) -> Result<(), AttachError> {
    // Nobody else ends an `attach`: its own signal handling (in the reader) does.
    let (_never, shutdown) = watch::channel(false);
    run_shared(pid, cfg, Arc::default(), shutdown).await
}

/// [`run`] with the binary shared with the other sessions of the same executable, ended early
/// when `shutdown` turns true (`goscope run` got a signal: a session still setting up has not
/// yet registered its own signal handlers, and would otherwise miss it and never end).
pub async fn run_shared(
    pid: u32,
    cfg: SessionConfig,
    executables: Arc<ExecutableCache>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AttachError> {
    if *shutdown.borrow() {
        return Ok(());
    }
    // Analysis, probe loading and the k8s lookup block for up to seconds on a huge binary: off
    // the async workers, so other sessions and the signal handling go on meanwhile.
    let setup_cfg = cfg.clone();
    let set_up = tokio::task::spawn_blocking(move || set_up(pid, &setup_cfg, &executables));
    let Setup { target, ring, probes, ctx, process_info } =
        set_up.await.map_err(|e| io::Error::other(format!("setting up the session of PID {pid}: {e}")))??;
    let binary = Arc::clone(&ctx.binary);
    let (tx, rx) = mpsc::channel(cfg.queue_len);
    let stop = Arc::new(Notify::new());
    let processor_stop = Arc::clone(&stop);
    let processor_cfg = cfg.clone();
    let processor_probes = probes.clone();
    let processor =
        tokio::task::spawn_blocking(move || process(rx, &ctx, &processor_cfg, &process_info, processor_stop, &processor_probes));
    // A Notify keeps a permit: a shutdown that comes before the reader waits still stops it.
    let shutdown_stop = Arc::clone(&stop);
    let forward_shutdown = tokio::spawn(async move {
        if shutdown.wait_for(|&down| down).await.is_ok() {
            shutdown_stop.notify_one();
        }
    });
    let stats = read_events(ring, &probes.probes, &target, tx, cfg.queue_len, cfg.duration, &stop).await;
    forward_shutdown.abort();
    let stats = stats?;
    let processed = processor.await.map_err(|e| io::Error::other(e.to_string()))??;
    probes.probes.lock().unwrap_or_else(PoisonError::into_inner).detach(target.pid);
    if goscope_memory::MappedFile::shrank(binary.file()) {
        warn_truncated(&target, cfg.format)?;
    }
    summarise(target.pid, &stats, &processed, cfg.format)?;
    match processed.failed_on {
        Some(finding) => Err(AttachError::FailOn(finding)),
        None => Ok(()),
    }
}

/// What a session reads and processes with, once set up.
struct Setup {
    target: Target,
    ring: RingBuf<MapData>,
    probes: TargetProbes,
    ctx: TargetContext,
    process_info: ProcessInfo,
}

/// Inspects the target (or shares the analysis of its executable), loads and attaches the probes
/// and announces the session. Blocking: runs on a blocking thread.
fn set_up(pid: u32, cfg: &SessionConfig, executables: &ExecutableCache) -> Result<Setup, AttachError> {
    let target = Target::from_pid(pid)?;
    let (binary, load_bias) = target.inspect_shared(executables)?;
    let support = binary.support();
    if !support.supported {
        return Err(AttachError::Unsupported {
            pid: target.pid,
            exe: target.exe_name.clone(),
            version: binary.build_info().go_version.raw.clone(),
            reasons: support.reasons.join("; "),
        });
    }
    let (mut probes, ring) = Probes::load(cfg.ring_bytes)?;
    // Scan mode attaches no probe at all: the reader still ticks the processor (and the
    // governor, when one applies, attaches the probes later).
    let attached = match cfg.start_level().kinds() {
        [] => probes.register(target.pid, target_config(&binary)),
        kinds => probes.attach_only(&target, &binary, target_config(&binary), kinds),
    };
    attached.map_err(|e| {
        if target.is_alive() { AttachError::Probe(e) } else { AttachError::Target(TargetError::Exited { pid: target.pid }) }
    })?;
    let probes = TargetProbes { probes: Arc::new(Mutex::new(probes)), target: target.clone() };
    if !target.is_alive() {
        return Err(AttachError::Target(TargetError::Exited { pid: target.pid }));
    }
    let mut process_info = ProcessInfo::from_pid(target.pid, &target.exe_name, &binary, cfg.otlp.otlp_command_args);
    process_info.k8s = k8s_attributes(&cfg.k8s, target.pid, std::mem::take(&mut process_info.k8s));
    announce(&target, &binary, &process_info, cfg)?;
    let ctx = TargetContext { pid: target.pid, binary, load_bias, attached_at_ns: goscope_memory::monotonic_ns() };
    Ok(Setup { target, ring, probes, ctx, process_info })
}

/// One warning that the executable shrank under goscope's reads (possible once no process runs
/// it): what was read from it after that came out as zeros, so some names may be missing.
fn warn_truncated(target: &Target, format: Format) -> io::Result<()> {
    let message = format!(
        "{} was truncated after the process exited, while goscope still read it: names and locations read after that \
         may be missing",
        target.exe_name
    );
    write_line(&mut io::stdout(), &warning_line(format, Some(target.pid), &message, &format!("PID {}: ", target.pid))?)
}

/// The process's `k8s.*` attributes. The API lookup uses a blocking HTTP client, which must not
/// run on the async runtime's threads: it runs on a thread of its own.
fn k8s_attributes(lookup: &K8sLookup, pid: u32, downward: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    let lookup = lookup.clone();
    let fallback = downward.clone();
    std::thread::spawn(move || lookup.attributes(pid, &downward).into_iter().collect()).join().unwrap_or(fallback)
}

/// The `attached` line (JSON, on stdout) or a one-line notice (text, on stderr).
fn announce(target: &Target, binary: &GoBinary, info: &ProcessInfo, cfg: &SessionConfig) -> io::Result<()> {
    let go_version = &binary.build_info().go_version.raw;
    let mode = if cfg.starts_in_scan() { WatchMode::Scan } else { WatchMode::Probes };
    let probes: Vec<AttachedProbe> = binary
        .probe_sites()
        .iter()
        .filter(|s| cfg.start_level().kinds().contains(&s.probe))
        .map(|s| AttachedProbe { name: s.probe.program_name(), symbol: &s.symbol, offset: s.offset })
        .collect();
    let mut stdout = io::stdout();
    match cfg.format {
        Format::Json => {
            let k8s = info.k8s.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let line = OutputLine::Attached { pid: target.pid, go_version, mode, probes, k8s }.to_json()?;
            write_line(&mut stdout, &line)?;
        }
        Format::Text if mode == WatchMode::Scan && !cfg.scan_only => eprintln!(
            "goscope: watching PID {} ({}, {go_version}) within a budget of {}% of a CPU: memory scans first, probes once \
             their estimated cost fits; Ctrl-C to stop",
            target.pid,
            target.exe_name,
            cfg.governed_budget_pct().unwrap_or_default()
        ),
        Format::Text if mode == WatchMode::Scan => eprintln!(
            "goscope: watching PID {} ({}, {go_version}) in scan mode: no probes, memory read every {} ms; Ctrl-C to stop",
            target.pid,
            target.exe_name,
            (crate::session::reader::TICK * cfg.scan_every_ticks() as u32).as_millis()
        ),
        Format::Text => eprintln!(
            "goscope: attached to PID {} ({}, {go_version}) with {} probes; Ctrl-C to stop",
            target.pid,
            target.exe_name,
            probes.len()
        ),
    }
    stdout.flush()
}

/// The session's last line (JSON, on stdout) or its text summary (on stderr).
fn summarise(pid: u32, stats: &ReadStats, processed: &ProcessStats, format: Format) -> io::Result<()> {
    let mut stdout = io::stdout();
    match format {
        Format::Json => {
            let line = OutputLine::Summary {
                pid,
                events: processed.events,
                findings: processed.findings,
                lost: stats.lost_kernel,
                dropped: stats.dropped,
                undecodable: stats.undecodable,
                target_exited: stats.target_exited,
                otlp: processed.otlp.as_ref(),
                read_failures: agent_ebpf::ProbeHit::ALL
                    .iter()
                    .map(|&p| (p.program_name(), stats.read_failures[p as usize]))
                    .collect(),
            }
            .to_json()?;
            write_line(&mut stdout, &line)?;
        }
        Format::Text => {
            let read_failures: u64 = stats.read_failures.iter().sum();
            eprintln!(
                "goscope: {} events, {} findings; {} lost in the kernel ring buffer, {} dropped in userspace{}{}",
                processed.events,
                processed.findings,
                stats.lost_kernel,
                stats.dropped,
                if read_failures > 0 { format!(", {read_failures} failed probe reads") } else { String::new() },
                if stats.target_exited { "; the target exited" } else { "" }
            );
            if let Some(o) = &processed.otlp {
                eprintln!(
                    "goscope: OTLP: {} spans, {} log records exported; {} lost; {} spans over the rate limit{}",
                    o.traces.exported,
                    o.logs.exported,
                    o.lost(),
                    o.traces.rate_limited,
                    if o.flushed { "" } else { " (not all flushed before the shutdown deadline)" }
                );
            }
        }
    }
    stdout.flush()
}
