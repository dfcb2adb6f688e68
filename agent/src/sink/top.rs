//! The live summary of `goscope attach --top`: goroutines by state and wait reason, and the
//! longest-blocked goroutines with what they wait on and where they came from.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    model::{hex, state::ProcessState},
    sink::OutputLine,
    target::TargetContext,
};

/// How many of the longest-blocked goroutines the summary lists.
const LONGEST: usize = 15;

pub fn render(state: &ProcessState, ctx: &TargetContext, now_ns: u64) -> String {
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
    let mut s = String::new();
    let _ = writeln!(
        s,
        "goscope: PID {} — {} goroutines known — +{} since attach",
        ctx.pid,
        total,
        duration(now_ns.saturating_sub(ctx.attached_at_ns))
    );
    let _ = writeln!(s, "\n  {:<10} {:>7}", "STATE", "COUNT");
    for (name, n) in &by_state {
        let _ = writeln!(s, "  {name:<10} {n:>7}");
    }
    let mut reasons: Vec<_> = by_reason.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let _ = writeln!(s, "\n  {:<28} {:>7}", "WAIT REASON", "COUNT");
    for (name, n) in &reasons {
        let _ = writeln!(s, "  {name:<28} {n:>7}");
    }
    let _ = writeln!(s, "\n  LONGEST BLOCKED (on channels, selects and locks)");
    for g in blocked.iter().take(LONGEST) {
        let Some(wait) = &g.wait else { continue };
        let since = now_ns.saturating_sub(g.since_ns);
        let at_least = if g.since_is_lower_bound { ">" } else { " " };
        let on = match (wait.channels.as_slice(), wait.lock) {
            ([], Some(lock)) => format!("lock {}", hex(lock)),
            ([], None) => String::new(),
            (chans, _) => chans
                .iter()
                .map(|&c| match state.channel(c).and_then(|ch| ch.capacity) {
                    Some(cap) => format!("chan {} (cap {cap})", hex(c)),
                    None => format!("chan {}", hex(c)),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let runs = g.start_pc.and_then(|pc| ctx.symbolize(pc)).map(|f| f.function).unwrap_or_else(|| "?".into());
        let parked_at = wait.site().map(|f| format!(" at {}:{}", short_file(&f.file), f.line)).unwrap_or_default();
        let created = g
            .creation_pc
            .and_then(|pc| ctx.symbolize(pc.saturating_sub(1)))
            .map(|f| format!(" created at {}:{}", short_file(&f.file), f.line))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  g{:<7} {:<18} {at_least}{:>8}  {on:<28} {runs}{parked_at}{created}",
            g.goid,
            ctx.wait_reason(wait.reason_code),
            duration(since)
        );
    }
    if blocked.len() > LONGEST {
        let _ = writeln!(s, "  ... and {} more", blocked.len() - LONGEST);
    }
    s
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
    use super::duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(310_000_000), "310ms");
        assert_eq!(duration(45_200_000_000), "45.2s");
        assert_eq!(duration(133_000_000_000), "2m13s");
        assert_eq!(duration(7_260_000_000_000), "2h01m");
    }
}
