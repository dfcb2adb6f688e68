//! The reader: drains the kernel ring buffer into a bounded queue for the processor. A full
//! queue is a counted drop, never a stalled reader.
use std::{
    io,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use goscope_memory::monotonic_ns;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::SignalKind,
    sync::{Notify, mpsc},
};

use crate::{
    model::events::GoroutineEvent,
    target::{Target, probes::Probes},
};

/// One item on the queue from the reader to the processor.
pub enum Item {
    Event(GoroutineEvent),
    /// Events the kernel dropped since the last report.
    Lost(u64),
    /// Clock tick: time to run the detectors and report health.
    Tick {
        now_ns: u64,
        reader: ReadStats,
    },
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    pub lost_kernel: u64,
    pub dropped: u64,
    pub undecodable: u64,
    pub target_exited: bool,
    /// Probe hits whose reads of the target's memory failed, by [`agent_ebpf::ProbeHit`] slot.
    pub read_failures: [u64; agent_ebpf::PROBE_HIT_SLOTS],
}

/// How often the processor judges (and, in scan mode, reads memory).
pub const TICK: Duration = Duration::from_millis(500);

/// How often the reader collects events the probes did not wake it for.
pub const RING_POLL_PERIOD: Duration = Duration::from_millis(10);

/// Drains the ring buffer until a signal, the deadline, or the target's exit.
pub async fn read_events(
    ring: RingBuf<MapData>,
    probes: &Mutex<Probes>,
    target: &Target,
    tx: mpsc::Sender<Item>,
    duration: Option<Duration>,
    stop: &Notify,
) -> io::Result<ReadStats> {
    // SAFETY: the RingBuf owns its map fd and moves into the AsyncFd, so the fd stays open and is
    // not reused while registered.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    let mut stats = ReadStats::default();
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(TICK);
    // The probes wake this reader only when the ring is a quarter full: below that, events are
    // collected on this timer, so a busy target pays no wakeup (and goscope no futex) per event.
    let mut poll = tokio::time::interval(RING_POLL_PERIOD);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &tx, &mut stats);
                guard.clear_ready();
            }
            _ = poll.tick() => drain(ring.get_mut(), &tx, &mut stats),
            _ = tick.tick() => {
                let lost = poll_probes(probes, target.pid, &mut stats);
                if lost > stats.lost_kernel {
                    let _ = tx.try_send(Item::Lost(lost - stats.lost_kernel));
                    stats.lost_kernel = lost;
                }
                // A skipped tick under load only delays detection by one period.
                let _ = tx.try_send(Item::Tick { now_ns: monotonic_ns(), reader: stats });
                if !target.is_alive() {
                    stats.target_exited = true;
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = stop.notified() => break,
            () = &mut deadline => break,
        }
    }
    // Whatever the kernel buffered before we stopped still belongs to the stream.
    drain(ring.get_mut(), &tx, &mut stats);
    stats.lost_kernel = stats.lost_kernel.max(poll_probes(probes, target.pid, &mut stats));
    Ok(stats)
}

/// Passes on the probes' log records, takes their failed-read counts for `pid` into `stats`, and
/// returns the events lost to a full ring buffer so far.
fn poll_probes(probes: &Mutex<Probes>, pid: u32, stats: &mut ReadStats) -> u64 {
    let mut probes = probes.lock().unwrap_or_else(PoisonError::into_inner);
    probes.flush_log();
    stats.read_failures = probes.read_failures(pid).unwrap_or(stats.read_failures);
    probes.lost_events()
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
