//! `goscope attach`: inspect the target, attach the probes, stream events until stopped.
//!
//! Stages: ring buffer reader (drains the kernel buffer, never waits on output) → bounded queue
//! with a drop counter → writer (formats and prints). A slow terminal or pipe therefore costs
//! counted drops in userspace, never a stalled ring buffer.
use std::{
    io::{self, Write as _},
    time::Duration,
};

use agent_ebpf::TargetConfig;
use aya::maps::{MapData, RingBuf};
use goscope_inspect::GoBinary;
use serde_json::json;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};

use crate::{
    events::GoroutineEvent,
    output::{EventRecord, Format, TargetContext, write_line},
    probes::Probes,
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
    Unsupported {
        pid: u32,
        exe: String,
        version: String,
        reasons: String,
    },
    #[error(transparent)]
    Probe(#[from] crate::probes::ProbeError),
    #[error("PID {pid} exited while goscope was attaching")]
    ExitedDuringAttach { pid: u32 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

pub struct AttachOptions {
    pub pid: u32,
    pub format: Format,
    pub duration: Option<Duration>,
    pub ring_bytes: u32,
    pub queue_len: usize,
}

/// Reads and analyses the target's executable.
pub fn inspect_target(target: &Target) -> Result<(GoBinary, u64), AttachError> {
    let inspect_err = |source| AttachError::Inspect {
        pid: target.pid,
        exe: target.exe_name.clone(),
        source,
    };
    let bytes = std::fs::read(&target.exe).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => AttachError::ExitedDuringAttach { pid: target.pid },
        _ => AttachError::Io(io::Error::new(e.kind(), format!("reading {}: {e}", target.exe.display()))),
    })?;
    let binary = GoBinary::from_bytes(&bytes).map_err(inspect_err)?;
    let bias = target.load_bias(&bytes)?;
    Ok((binary, bias))
}

fn target_config(binary: &GoBinary) -> TargetConfig {
    let l = binary.layout();
    TargetConfig {
        g_goid: l.g_goid,
        g_parent_goid: l.g_parent_goid.unwrap_or(0),
        g_m: l.g_m,
        g_gopc: l.g_gopc,
        g_startpc: l.g_startpc,
        m_curg: l.m_curg,
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC matches bpf_ktime_get_ns.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

    let mut stdout = io::stdout().lock();
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
    drop(stdout);

    let ctx = TargetContext { pid: target.pid, binary, load_bias, attached_at_ns: monotonic_ns() };
    let (tx, rx) = mpsc::channel(opts.queue_len);
    let writer = tokio::task::spawn_blocking(move || write_events(rx, &ctx, opts.format));
    let stats = read_events(ring, &mut probes, &target, tx, opts.duration).await?;
    let written = writer.await.map_err(|e| io::Error::other(e.to_string()))??;
    probes.detach(target.pid);

    let mut stdout = io::stdout().lock();
    match opts.format {
        Format::Json => write_line(
            &mut stdout,
            &json!({"kind": "summary", "events": written, "lost": stats.lost_kernel, "dropped": stats.dropped, "undecodable": stats.undecodable, "target_exited": stats.target_exited}).to_string(),
        )?,
        Format::Text => eprintln!(
            "goscope: {written} events; {} lost in the kernel ring buffer, {} dropped in userspace{}",
            stats.lost_kernel,
            stats.dropped,
            if stats.target_exited { "; the target exited" } else { "" }
        ),
    }
    stdout.flush()?;
    Ok(())
}

#[derive(Default)]
struct ReadStats {
    lost_kernel: u64,
    dropped: u64,
    undecodable: u64,
    target_exited: bool,
}

/// One item on the queue to the writer.
enum Item {
    Event(GoroutineEvent),
    Lost(u64),
}

async fn read_events(
    ring: RingBuf<MapData>,
    probes: &mut Probes,
    target: &Target,
    tx: mpsc::Sender<Item>,
    duration: Option<Duration>,
) -> Result<ReadStats, AttachError> {
    // SAFETY: the RingBuf owns its map fd and moves into the AsyncFd, so the fd stays open and is
    // not reused while registered.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    let mut stats = ReadStats::default();
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &tx, &mut stats);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let lost = probes.lost_events();
                if lost > stats.lost_kernel {
                    let _ = tx.try_send(Item::Lost(lost - stats.lost_kernel));
                    stats.lost_kernel = lost;
                }
                if !target.is_alive() {
                    stats.target_exited = true;
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut deadline => break,
        }
    }
    // Whatever the kernel buffered before we stopped still belongs to the stream.
    drain(ring.get_mut(), &tx, &mut stats);
    stats.lost_kernel = stats.lost_kernel.max(probes.lost_events());
    Ok(stats)
}

fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Item>, stats: &mut ReadStats) {
    while let Some(item) = ring.next() {
        match GoroutineEvent::decode(&item) {
            Ok(ev) => {
                if tx.try_send(Item::Event(ev)).is_err() {
                    stats.dropped += 1;
                }
            }
            Err(_) => stats.undecodable += 1,
        }
    }
}

/// Formats queued events on a blocking thread; returns how many events it wrote.
fn write_events(mut rx: mpsc::Receiver<Item>, ctx: &TargetContext, format: Format) -> io::Result<u64> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut written = 0;
    while let Some(item) = rx.blocking_recv() {
        let is_event = matches!(item, Item::Event(_));
        let line = match (item, format) {
            (Item::Event(ev), Format::Json) => serde_json::to_string(&EventRecord::new(&ev, ctx)).map_err(io::Error::other)?,
            (Item::Event(ev), Format::Text) => EventRecord::new(&ev, ctx).to_text(ctx.attached_at_ns),
            (Item::Lost(n), Format::Json) => json!({"kind": "lost", "pid": ctx.pid, "count": n}).to_string(),
            (Item::Lost(n), Format::Text) => format!("goscope: {n} events lost: the ring buffer was full (raise --ring-buffer-size)"),
        };
        write_line(&mut out, &line)?;
        written += u64::from(is_event);
        if rx.is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(written)
}
