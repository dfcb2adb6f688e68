//! The live summary of `goscope attach --top`: goroutines by state and wait reason, and the
//! longest-blocked goroutines with what they wait on and where they came from.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    model::{
        Location, hex,
        state::{Goroutine, ProcessState},
    },
    sink::{OutputLine, otlp::ProbeHealth},
    target::TargetContext,
};

/// How many of the longest-blocked goroutines the summary lists.
const LONGEST: usize = 15;
/// The screen width the summary fits in.
pub const WIDTH: usize = 120;

/// What `--top` shows about goscope itself: how much it sees, what it misses, what it costs.
#[derive(Debug, Clone, Default)]
pub struct TopStatus {
    /// Events processed since attach.
    pub events: u64,
    /// Events a second over the last refresh interval.
    pub events_per_s: f64,
    /// Lost in the kernel ring buffer.
    pub lost: u64,
    /// Dropped in userspace (queue full).
    pub dropped: u64,
    /// Hits per probe, and whether the kernel emulates its instruction.
    pub probes: Vec<ProbeHealth>,
    /// What watches the target now (`probes`, `no_semaphore`, `scan`: the governor's levels).
    pub mode: &'static str,
    /// The governor's `--overhead-budget`, in percent of one CPU; None when nothing governs.
    pub budget_pct: Option<f64>,
}

/// The event rate `--top` shows: events between two refreshes over the time between them.
#[derive(Debug, Default)]
pub struct EventRate {
    last: Option<(u64, u64)>,
}

impl EventRate {
    /// What `--top` shows now, given the counts so far.
    pub fn status(&mut self, now_ns: u64, events: u64, lost: u64, dropped: u64, probes: Vec<ProbeHealth>) -> TopStatus {
        let events_per_s = match self.last {
            Some((t, n)) if now_ns > t => events.saturating_sub(n) as f64 * 1e9 / (now_ns - t) as f64,
            _ => 0.0,
        };
        self.last = Some((now_ns, events));
        TopStatus { events, events_per_s, lost, dropped, probes, ..TopStatus::default() }
    }
}

impl TopStatus {
    /// `events 12345 (812/s)  lost 0  dropped 0  mode probes (budget 1% of a CPU)`.
    fn events_line(&self) -> String {
        let budget = self.budget_pct.map_or_else(|| "not governed".to_owned(), |b| format!("budget {b}% of a CPU"));
        format!(
            "events {} ({:.0}/s)  lost {}  dropped {}  mode {} ({budget})",
            self.events, self.events_per_s, self.lost, self.dropped, self.mode
        )
    }

    /// `probes: 3 emulated (~1 us/hit), 1 single-stepped (~5 us/hit); est. target CPU 0.012 s`.
    fn probes_line(&self) -> String {
        let emulated = self.probes.iter().filter(|p| p.emulated).count();
        let stepped = self.probes.len() - emulated;
        let cost: f64 = self.probes.iter().map(ProbeHealth::estimated_cost_s).sum();
        let failing: Vec<String> =
            self.probes.iter().filter(|p| p.read_failures > 0).map(|p| format!("{} {}", p.name, p.read_failures)).collect();
        let failures = if failing.is_empty() { String::new() } else { format!("; read failures: {}", failing.join(", ")) };
        format!(
            "probes: {emulated} emulated (~1 us/hit), {stepped} single-stepped (~5 us/hit); target CPU in probes ~{cost:.3} s{failures}"
        )
    }
}

pub fn render(state: &ProcessState, ctx: &TargetContext, now_ns: u64, status: &TopStatus) -> String {
    let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut blocked = Vec::new();
    for g in state.goroutines() {
        *by_state.entry(g.state.name()).or_default() += 1;
        if let Some(wait) = &g.wait {
            *by_reason.entry(ctx.wait_reason(wait.reason_code)).or_default() += 1;
            if wait.class.is_user_blocking() {
                blocked.push(g);
            }
        }
    }
    blocked.sort_by_key(|g| (g.since_ns, g.goid));
    let total: usize = by_state.values().sum();
    let mut lines = vec![
        format!(
            "goscope: PID {} - {} goroutines known - +{} since attach",
            ctx.pid,
            total,
            duration(now_ns.saturating_sub(ctx.attached_at_ns))
        ),
        status.events_line(),
        status.probes_line(),
        String::new(),
        format!("  {:<10} {:>7}", "STATE", "COUNT"),
    ];
    lines.extend(by_state.iter().map(|(name, n)| format!("  {name:<10} {n:>7}")));
    let mut reasons: Vec<_> = by_reason.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    lines.push(String::new());
    lines.push(format!("  {:<28} {:>7}", "WAIT REASON", "COUNT"));
    lines.extend(reasons.iter().map(|(name, n)| format!("  {:<28} {n:>7}", clip(name, 28))));
    lines.push(String::new());
    lines.push("  LONGEST BLOCKED (on channels, selects and locks)".to_string());
    lines.push(blocked_row("GOROUTINE", "WAIT REASON", "  BLOCKED", "ON", "START FUNCTION", "PARKED AT"));
    for g in blocked.iter().take(LONGEST) {
        lines.push(blocked_line(g, state, ctx, now_ns));
    }
    if blocked.len() > LONGEST {
        lines.push(format!("  ... and {} more", blocked.len() - LONGEST));
    }
    let mut s = String::new();
    for line in lines {
        let _ = writeln!(s, "{}", clip(&line, WIDTH));
    }
    s
}

/// One row of the longest-blocked table: fixed columns, each clipped to its width, so a row
/// never passes [`WIDTH`].
fn blocked_row(goid: &str, reason: &str, since: &str, on: &str, start: &str, parked_at: &str) -> String {
    format!(
        "  {:<10} {:<16} {:>9}  {:<26} {:<28} {}",
        clip(goid, 10),
        clip(reason, 16),
        clip(since, 9),
        clip(on, 26),
        clip(start, 28),
        clip(parked_at, 22)
    )
}

fn blocked_line(g: &Goroutine, state: &ProcessState, ctx: &TargetContext, now_ns: u64) -> String {
    let Some(wait) = &g.wait else { return String::new() };
    let at_least = if g.since_is_lower_bound { ">" } else { "" };
    let since = format!("{at_least}{}", duration(now_ns.saturating_sub(g.since_ns)));
    let on = match (wait.channels.as_slice(), wait.lock) {
        ([], Some(lock)) => format!("lock {}", hex(lock)),
        ([], None) => String::new(),
        ([c], _) => match state.channel(*c).and_then(|ch| ch.capacity) {
            Some(cap) => format!("chan {} cap {cap}", hex(*c)),
            None => format!("chan {}", hex(*c)),
        },
        (chans, _) => format!("{} chans from {}", chans.len(), hex(chans[0])),
    };
    let start = g.start_pc.and_then(|pc| ctx.symbolize(pc)).map(|f| f.function).unwrap_or_else(|| "?".into());
    let start = called_by_go_wrapper(&start, &wait.stack).unwrap_or(start);
    let parked_at = wait.site().map(|f| format!("{}:{}", short_file(&f.file), f.line)).unwrap_or_default();
    blocked_row(&format!("g{}", g.goid), &ctx.wait_reason(wait.reason_code), &since, &on, &start, &parked_at)
}

/// For a goroutine started through the wrapper the compiler makes for `go f(args)` (Go 1.22+:
/// `main.main.gowrap1`), the function the wrapper called, from the stack read from memory.
pub(crate) fn called_by_go_wrapper(start: &str, stack: &[Location]) -> Option<String> {
    let is_wrapper = start.rsplit('.').next().is_some_and(|last| last.starts_with("gowrap"));
    if !is_wrapper {
        return None;
    }
    let at = stack.iter().position(|f| f.function == start)?;
    Some(stack.get(at.checked_sub(1)?)?.function.clone())
}

/// `text` cut to at most `width` characters, the cut marked with `~`.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('~');
    out
}

/// The periodic `{"kind":"state"}` JSON line: counts a script can compare with its own view
/// (`user_goroutines` counts what `runtime.NumGoroutine()` counts).
pub fn state_line(state: &ProcessState, ctx: &TargetContext, now_ns: u64) -> OutputLine<'static> {
    let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut user = 0;
    for g in state.goroutines() {
        *by_state.entry(g.state.name()).or_default() += 1;
        if let Some(wait) = &g.wait {
            *by_reason.entry(ctx.wait_reason(wait.reason_code)).or_default() += 1;
        }
        let runtime_own =
            g.start_pc.and_then(|pc| ctx.symbolize(pc)).is_some_and(|f| goscope_inspect::is_runtime_goroutine(&f.function));
        user += usize::from(!runtime_own);
    }
    OutputLine::State {
        pid: ctx.pid,
        ts_ns: now_ns,
        goroutines: by_state.values().sum::<usize>(),
        user_goroutines: user,
        by_state,
        by_wait_reason: by_reason,
    }
}

fn short_file(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `2m13s`, `45.2s`, `310ms`.
fn duration(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    match secs {
        0 => format!("{}ms", ns / 1_000_000),
        1..=59 => format!("{:.1}s", ns as f64 / 1e9),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::{Location, WIDTH, blocked_row, called_by_go_wrapper, clip, duration};

    #[test]
    fn a_go_wrapper_shows_the_function_it_calls() {
        let frame = |f: &str| Location::new(f, "main.go", 1);
        let stack = [frame("runtime.gopark"), frame("main.deadlockA"), frame("main.main.gowrap1"), frame("runtime.goexit")];
        assert_eq!(called_by_go_wrapper("main.main.gowrap1", &stack).as_deref(), Some("main.deadlockA"));
        assert_eq!(called_by_go_wrapper("main.worker", &stack), None);
        assert_eq!(called_by_go_wrapper("main.main.gowrap2", &stack), None, "not on the stack: unknown");
    }

    #[test]
    fn rows_fit_the_screen_whatever_their_contents() {
        let long = "x".repeat(300);
        let row = blocked_row(&long, &long, &long, &long, &long, &long);
        assert!(row.chars().count() <= WIDTH, "{} columns: {row}", row.chars().count());
        assert_eq!(clip("main.worker", 28), "main.worker");
        assert_eq!(clip("github.com/org/repo/pkg.(*Server).handle", 12), "github.com/~");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(310_000_000), "310ms");
        assert_eq!(duration(45_200_000_000), "45.2s");
        assert_eq!(duration(133_000_000_000), "2m13s");
        assert_eq!(duration(7_260_000_000_000), "2h01m");
    }
}
