//! The per-target span rate limit: a token bucket refilled at `rate` spans a second, holding at
//! most one second's worth, so a burst of short waits (a server under load) costs the backend at
//! most `rate` spans a second from each watched process, and every span refused is counted.
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct TokenBucket {
    /// Tokens added per second; also the most the bucket holds.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `per_second` spans a second.
    pub(crate) fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second);
        Self { rate, tokens: rate, last: now }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).min(Duration::from_secs(1));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_second_worth_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert_eq!((0..25).filter(|_| b.take(t0)).count(), 10, "a full bucket holds one second's worth");
        // Half a second later: five more, however many are asked for.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..25).filter(|_| b.take(t1)).count(), 5);
        // A long pause refills to the cap, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..25).filter(|_| b.take(t2)).count(), 10);
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        // 10 s of 1000 attempts a second.
        let admitted = (0..10_000).filter(|i| b.take(t0 + Duration::from_millis(*i))).count();
        assert!((1000..=1100).contains(&admitted), "{admitted}");
    }
}
