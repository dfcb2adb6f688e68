//! Trace and span IDs derived from what they describe, so that spans emitted at different times
//! (a goroutine's blocking episodes now, its lifetime when it exits, its parent's lifetime later)
//! can name each other without goscope remembering anything per goroutine.
//!
//! Every goroutine gets its own trace: its lifetime span is the root and its blocking episodes are
//! children. A per-session random salt keeps two goscope sessions (or two processes) apart.
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// SplitMix64's finalizer: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a string, for keys that are strings (finding IDs).
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ids {
    salt: u64,
}

// Domains, so IDs of different kinds never collide by construction.
const TRACE_HI: u64 = 1;
const TRACE_LO: u64 = 2;
const LIFETIME: u64 = 3;
const EPISODE: u64 = 4;
const ONGOING: u64 = 5;
const FINDING_HI: u64 = 6;
const FINDING_LO: u64 = 7;
const FINDING_SPAN: u64 = 8;

impl Ids {
    pub(crate) fn new(salt: u64) -> Self {
        Self { salt }
    }

    /// A fresh salt: wall clock, PID and a stack address.
    pub(crate) fn random_salt(pid: u32) -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let local = 0u8;
        mix(now ^ mix(u64::from(pid) ^ mix(std::process::id().into())) ^ (&raw const local as u64))
    }

    fn hash(&self, parts: &[u64]) -> u64 {
        let h = parts.iter().fold(mix(self.salt), |h, &p| mix(h ^ mix(p.wrapping_add(0x9e37_79b9_7f4a_7c15))));
        if h == 0 { 1 } else { h }
    }

    fn trace(&self, hi: u64, lo: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        b[8..].copy_from_slice(&lo.to_be_bytes());
        TraceId::from_bytes(b)
    }

    /// The trace of goroutine `goid`.
    pub(crate) fn goroutine_trace(&self, goid: u64) -> TraceId {
        self.trace(self.hash(&[TRACE_HI, goid]), self.hash(&[TRACE_LO, goid]))
    }

    /// The root span of goroutine `goid`'s trace: its lifetime.
    pub(crate) fn lifetime_span(&self, goid: u64) -> SpanId {
        SpanId::from_bytes(self.hash(&[LIFETIME, goid]).to_be_bytes())
    }

    /// A finished blocking episode: one per (goroutine, start of the wait).
    pub(crate) fn episode_span(&self, goid: u64, since_ns: u64) -> SpanId {
        SpanId::from_bytes(self.hash(&[EPISODE, goid, since_ns]).to_be_bytes())
    }

    /// A still-ongoing blocking episode as finding number `seq` saw it.
    pub(crate) fn ongoing_span(&self, goid: u64, seq: u64) -> SpanId {
        SpanId::from_bytes(self.hash(&[ONGOING, goid, seq]).to_be_bytes())
    }

    /// The trace and root span of finding number `seq` (raised once per id and session).
    pub(crate) fn finding(&self, id: &str, seq: u64) -> (TraceId, SpanId) {
        let k = fnv(id);
        (
            self.trace(self.hash(&[FINDING_HI, k, seq]), self.hash(&[FINDING_LO, k, seq])),
            SpanId::from_bytes(self.hash(&[FINDING_SPAN, k, seq]).to_be_bytes()),
        )
    }

    pub(crate) fn lifetime_context(&self, goid: u64) -> SpanContext {
        context(self.goroutine_trace(goid), self.lifetime_span(goid))
    }
}

pub(crate) fn context(trace: TraceId, span: SpanId) -> SpanContext {
    SpanContext::new(trace, span, TraceFlags::SAMPLED, false, TraceState::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_valid_and_distinct() {
        let ids = Ids::new(42);
        assert_eq!(ids.goroutine_trace(7), Ids::new(42).goroutine_trace(7));
        assert_ne!(ids.goroutine_trace(7), ids.goroutine_trace(8));
        assert_ne!(ids.goroutine_trace(7), Ids::new(43).goroutine_trace(7));
        assert_ne!(ids.lifetime_span(7), ids.episode_span(7, 0));
        assert_ne!(ids.episode_span(7, 1), ids.episode_span(7, 2));
        assert!(ids.lifetime_context(0).is_valid());
        let (t1, s1) = ids.finding("deadlock:1:2", 0);
        let (t2, s2) = ids.finding("deadlock:1:2", 1);
        assert!(t1 != t2 && s1 != s2);
    }
}
