//! The reader: drains the kernel ring buffer into a bounded queue for the processor. A full
//! queue is a counted drop, never a stalled reader. Each drain copies the ring's records, back
//! to back, into one buffer that goes on the queue as one item: one allocation and one queue
//! operation per drain, not per event; the processor decodes the records.
use std::{
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use agent_ebpf::RawEvent;
use aya::maps::{MapData, RingBuf};
use bytes::{Bytes, BytesMut};
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
    /// The records of one drain of the ring.
    Events(EventBatch),
    /// Events the kernel dropped since the last report.
    Lost(u64),
    /// Clock tick: time to run the detectors and report health.
    Tick { now_ns: u64, reader: ReadStats },
    /// A short tick between two [`Item::Tick`]s: the budget governor's look at the probes' hit
    /// counters, so that a sudden burst costs the target at most this period of probes.
    Pulse { now_ns: u64 },
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

/// Raw ring records ([`RawEvent`]s), back to back, each checked to decode. Holds its place in
/// the queue's event budget ([`QueuedEvents`]) until the processor drops it.
pub struct EventBatch {
    records: Bytes,
    queued: Arc<AtomicUsize>,
}

impl EventBatch {
    const RECORD: usize = size_of::<RawEvent>();

    /// Events in the batch.
    fn count(&self) -> usize {
        self.records.len() / Self::RECORD
    }

    /// The events, decoded.
    pub fn events(&self) -> impl Iterator<Item = GoroutineEvent> + '_ {
        self.records.as_chunks::<{ Self::RECORD }>().0.iter().filter_map(|r| GoroutineEvent::decode(r).ok())
    }
}

impl Drop for EventBatch {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.count(), Ordering::Relaxed);
    }
}

/// Events on the queue (in batches not yet processed), bounded by the session's `queue_len`.
struct QueuedEvents {
    count: Arc<AtomicUsize>,
    limit: usize,
}

impl QueuedEvents {
    /// Puts `records` (whole records) on the queue as one batch; false (and nothing queued) when
    /// the queue holds too many events already or is closed.
    fn send(&self, tx: &mpsc::Sender<Item>, records: Bytes) -> bool {
        let n = records.len() / EventBatch::RECORD;
        if self.count.load(Ordering::Relaxed) + n > self.limit {
            return false;
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        // On failure the batch comes back inside the error and is dropped, releasing its count.
        tx.try_send(Item::Events(EventBatch { records, queued: Arc::clone(&self.count) })).is_ok()
    }
}

/// How often the processor judges (and, in scan mode, reads memory).
pub const TICK: Duration = Duration::from_millis(500);

/// How often the reader collects events the probes did not wake it for.
pub const RING_POLL_PERIOD: Duration = Duration::from_millis(10);

/// How often the budget governor looks for a burst far over budget ([`Item::Pulse`]).
pub const PULSE: Duration = Duration::from_millis(50);

/// Drains the ring buffer until a signal, the deadline, or the target's exit.
pub async fn read_events(
    ring: RingBuf<MapData>,
    probes: &Mutex<Probes>,
    target: &Target,
    tx: mpsc::Sender<Item>,
    queue_len: usize,
    duration: Option<Duration>,
    stop: &Notify,
) -> io::Result<ReadStats> {
    let queued = QueuedEvents { count: Arc::new(AtomicUsize::new(0)), limit: queue_len };
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
    let mut pulse = tokio::time::interval(PULSE);
    pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &tx, &queued, &mut stats);
                guard.clear_ready();
            }
            _ = poll.tick() => drain(ring.get_mut(), &tx, &queued, &mut stats),
            _ = pulse.tick() => {
                let _ = tx.try_send(Item::Pulse { now_ns: monotonic_ns() });
            }
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
    drain(ring.get_mut(), &tx, &queued, &mut stats);
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

/// Copies every record in the ring into one batch for the processor.
fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Item>, queued: &QueuedEvents, stats: &mut ReadStats) {
    let mut records = BytesMut::new();
    while let Some(item) = ring.next() {
        match GoroutineEvent::check(&item) {
            Ok(_) => records.extend_from_slice(&item),
            Err(_) => stats.undecodable += 1,
        }
    }
    let n = records.len() / EventBatch::RECORD;
    if n > 0 && !queued.send(tx, records.freeze()) {
        stats.dropped += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use agent_ebpf::EventKind;

    use super::*;

    fn record(goid: u64) -> Vec<u8> {
        let raw = RawEvent { goid, kind: EventKind::Exited as u8, ..RawEvent::default() };
        let mut bytes = Vec::with_capacity(size_of::<RawEvent>());
        bytes.extend_from_slice(&raw.ts_ns.to_ne_bytes());
        bytes.extend_from_slice(&raw.goid.to_ne_bytes());
        bytes.resize(offset_of!(RawEvent, kind), 0);
        bytes.push(raw.kind);
        bytes.resize(size_of::<RawEvent>(), 0);
        bytes
    }

    #[test]
    fn batches_decode_in_order_and_hold_their_place_in_the_queue_until_processed() {
        let (tx, mut rx) = mpsc::channel(16);
        let queued = QueuedEvents { count: Arc::new(AtomicUsize::new(0)), limit: 3 };
        let two: Vec<u8> = [record(1), record(2)].concat();
        assert!(queued.send(&tx, Bytes::from(two.clone())));
        assert!(!queued.send(&tx, Bytes::from(two.clone())), "4 events would pass the limit of 3");
        assert_eq!(queued.count.load(Ordering::Relaxed), 2, "a refused batch holds no place");
        let Some(Item::Events(batch)) = rx.try_recv().ok() else { panic!("no batch") };
        assert_eq!(batch.events().map(|e| e.goid).collect::<Vec<_>>(), [1, 2]);
        drop(batch);
        assert_eq!(queued.count.load(Ordering::Relaxed), 0);
        assert!(queued.send(&tx, Bytes::from(two)), "room again once processed");
    }
}
