//! `goscope attach`: inspect the target, attach the probes, stream events until stopped.
//! The event path after attach lives in `pipeline`.
use std::{
    io::{self, Write as _},
    sync::Arc,
    time::Duration,
};

use agent_ebpf::{ReturnAddress, TargetConfig};
use goscope_inspect::{GoBinary, ProbeKind, ReturnAddressAt};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::{
    detect::FindingType,
    export::{OtlpArgs, ProcessInfo},
    output::{Format, TargetContext, write_line},
    pipeline::{ProcessorConfig, monotonic_ns, process, read_events},
    privilege::{Operation, hint},
    probes::Probes,
    state::WaitReasons,
    target::Target,
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
    #[error("PID {pid} ({exe}): {source}")]
    Inspect {
        pid: u32,
        exe: String,
        #[source]
        source: goscope_inspect::InspectError,
    },
    #[error("{path}: {source}")]
    Binary {
        path: String,
        #[source]
        source: goscope_inspect::InspectError,
    },
    #[error("PID {pid} ({exe}) runs {version}, which goscope cannot watch: {reasons}")]
    Unsupported { pid: u32, exe: String, version: String, reasons: String },
    #[error(transparent)]
    Probe(#[from] crate::probes::ProbeError),
    #[error("PID {pid} exited while goscope was attaching")]
    ExitedDuringAttach { pid: u32 },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a {} finding was made (--fail-on {})", .0.as_str(), .0.as_str())]
    FailOn(FindingType),
}

#[derive(Clone)]
pub struct AttachOptions {
    pub pid: u32,
    pub format: Format,
    pub duration: Option<Duration>,
    pub ring_bytes: u32,
    pub queue_len: usize,
    pub show_events: bool,
    pub block_threshold: Duration,
    pub top: bool,
    pub state_every: Option<Duration>,
    pub fail_on: Vec<FindingType>,
    /// Bytes one leak proof may read.
    pub leak_scan_budget: u64,
    pub otlp: OtlpArgs,
}

/// Reads and analyses the target's executable.
pub fn inspect_target(target: &Target) -> Result<(GoBinary, u64), AttachError> {
    let inspect_err = |source| AttachError::Inspect { pid: target.pid, exe: target.exe_name.clone(), source };
    let bytes = read_exe(target)?;
    let binary = GoBinary::from_bytes(&bytes).map_err(inspect_err)?;
    let bias = target.load_bias(&bytes)?;
    Ok((binary, bias))
}

/// Reads `/proc/PID/exe`. It is briefly unreadable while a process execs, and for good once it
/// exits: retry a few times before deciding which.
fn read_exe(target: &Target) -> Result<Vec<u8>, AttachError> {
    let mut tries = 0;
    loop {
        match std::fs::read(&target.exe) {
            Ok(bytes) => return Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 5 && target.is_alive() => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if target.is_alive() {
                    AttachError::Io(io::Error::new(
                        e.kind(),
                        format!("PID {} has no readable executable (a kernel thread or a zombie?)", target.pid),
                    ))
                } else {
                    AttachError::ExitedDuringAttach { pid: target.pid }
                });
            }
            Err(e) => {
                let hint = hint(Operation::ReadProcess, &e);
                return Err(AttachError::Io(io::Error::new(e.kind(), format!("reading {}: {e} ({hint})", target.exe.display()))));
            }
        }
    }
}

fn target_config(binary: &GoBinary) -> TargetConfig {
    let l = binary.layout();
    let park_site = binary.probe_sites().iter().find(|s| s.probe == ProbeKind::GoroutineParked);
    let park_return_address = match park_site.map(|s| s.return_address) {
        Some(ReturnAddressAt::StackPointer) => ReturnAddress::AtStackPointer,
        Some(ReturnAddressAt::FramePointer) => ReturnAddress::AboveFramePointer,
        Some(ReturnAddressAt::Unknown) | None => ReturnAddress::Unknown,
    };
    TargetConfig {
        g_goid: l.g_goid,
        g_parent_goid: l.g_parent_goid.unwrap_or(0),
        g_m: l.g_m,
        g_gopc: l.g_gopc,
        g_startpc: l.g_startpc,
        m_curg: l.m_curg,
        park_return_address: park_return_address as u32,
        _pad: 0,
        sema_wait_reasons: WaitReasons::new(binary.wait_reasons().names().to_vec()).semaphore_codes(),
    }
}

pub async fn run(opts: AttachOptions) -> Result<(), AttachError> {
    let target = Target::from_pid(opts.pid)?;
    let (binary, load_bias) = inspect_target(&target)?;
    let support = binary.support();
    if !support.supported {
        return Err(AttachError::Unsupported {
            pid: target.pid,
            exe: target.exe_name.clone(),
            version: binary.build_info().go_version.raw.clone(),
            reasons: support.reasons.join("; "),
        });
    }
    let (mut probes, ring) = Probes::load(opts.ring_bytes)?;
    probes.attach(&target, &binary, target_config(&binary)).map_err(|e| {
        if target.is_alive() { AttachError::Probe(e) } else { AttachError::ExitedDuringAttach { pid: target.pid } }
    })?;
    if !target.is_alive() {
        return Err(AttachError::ExitedDuringAttach { pid: target.pid });
    }

    let mut stdout = io::stdout();
    let probes_json: Vec<_> = binary
        .probe_sites()
        .iter()
        .map(|s| json!({"name": s.probe.program_name(), "symbol": s.symbol, "offset": s.offset}))
        .collect();
    let go_version = binary.build_info().go_version.raw.clone();
    match opts.format {
        Format::Json => write_line(
            &mut stdout,
            &json!({"kind": "attached", "pid": target.pid, "go_version": go_version, "probes": probes_json}).to_string(),
        )?,
        Format::Text => eprintln!(
            "goscope: attached to PID {} ({}, {go_version}) with {} probes; Ctrl-C to stop",
            target.pid,
            target.exe_name,
            probes_json.len()
        ),
    }
    stdout.flush()?;

    let process_info = ProcessInfo::from_pid(target.pid, &target.exe_name, &binary);
    let ctx = TargetContext { pid: target.pid, binary, load_bias, attached_at_ns: monotonic_ns() };
    let (tx, rx) = mpsc::channel(opts.queue_len);
    let stop = Arc::new(Notify::new());
    let cfg = ProcessorConfig {
        format: opts.format,
        otlp: opts.otlp,
        process_info,
        show_events: opts.show_events && !opts.top,
        block_threshold: opts.block_threshold,
        top: opts.top,
        state_every: opts.state_every,
        fail_on: opts.fail_on,
        leak_scan_budget: opts.leak_scan_budget,
        stop: Arc::clone(&stop),
    };
    let processor = tokio::task::spawn_blocking(move || process(rx, &ctx, &cfg));
    let stats = read_events(ring, &probes, &target, tx, opts.duration, &stop).await?;
    let processed = processor.await.map_err(|e| io::Error::other(e.to_string()))??;
    probes.detach(target.pid);

    let mut stdout = io::stdout();
    match opts.format {
        Format::Json => write_line(
            &mut stdout,
            &json!({"kind": "summary", "pid": target.pid, "events": processed.events, "findings": processed.findings,
                    "lost": stats.lost_kernel, "dropped": stats.dropped, "undecodable": stats.undecodable,
                    "target_exited": stats.target_exited,
                    "otlp": processed.otlp})
            .to_string(),
        )?,
        Format::Text => {
            eprintln!(
                "goscope: {} events, {} findings; {} lost in the kernel ring buffer, {} dropped in userspace{}",
                processed.events,
                processed.findings,
                stats.lost_kernel,
                stats.dropped,
                if stats.target_exited { "; the target exited" } else { "" }
            );
            if let Some(o) = &processed.otlp {
                eprintln!(
                    "goscope: OTLP: {} spans, {} log records exported; {} lost{}",
                    o.traces.exported,
                    o.logs.exported,
                    o.lost(),
                    if o.flushed { "" } else { " (not all flushed before the shutdown deadline)" }
                );
            }
        }
    }
    stdout.flush()?;
    match processed.failed_on {
        Some(finding) => Err(AttachError::FailOn(finding)),
        None => Ok(()),
    }
}
