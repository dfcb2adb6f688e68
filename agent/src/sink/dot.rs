//! A finding's wait-for graph as Graphviz DOT: its goroutines (wait reason, how long, where they
//! blocked), the channels and locks they wait on, and, for a deadlock, which goroutine each one
//! waits for (the chain, in wait-for order, closes into a cycle).
use std::{collections::BTreeMap, fmt::Write as _};

use crate::detect::{Finding, Involved};

/// The DOT text of `finding`'s graph (`dot -Tsvg` renders it).
pub fn finding_graph(finding: &Finding) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quoted(&finding.id.to_string()));
    let title = format!("{} ({}): {}", finding.finding_type.as_str(), finding.grade.as_str(), finding.summary);
    let _ = writeln!(out, "  label={}; labelloc=t; rankdir=LR;", quoted(&title));
    let _ = writeln!(out, "  node [fontname=\"monospace\", fontsize=10]; edge [fontname=\"monospace\", fontsize=9];");
    let mut objects: BTreeMap<String, usize> = BTreeMap::new();
    for g in &finding.goroutines {
        let _ = writeln!(out, "  g{} [shape=box, label={}];", g.goid, quoted(&goroutine_label(g)));
        if let Some(object) = waited_on(g) {
            let next = objects.len();
            let id = *objects.entry(object.clone()).or_insert(next);
            if id == next {
                let _ = writeln!(out, "  o{id} [shape=ellipse, label={}];", quoted(&object));
            }
            let _ = writeln!(out, "  g{} -> o{id} [label={}];", g.goid, quoted(&g.wait_reason));
        }
    }
    // Deadlock chain: each goroutine waits for the next one to act on what it waits on.
    for (i, &goid) in finding.chain.iter().enumerate() {
        let next = finding.chain[(i + 1) % finding.chain.len()];
        let object = finding.goroutines.iter().find(|g| g.goid == goid).and_then(waited_on);
        match object.and_then(|o| objects.get(&o)) {
            Some(id) => {
                let _ = writeln!(out, "  o{id} -> g{next} [style=dashed, label=\"only it can act\"];");
            }
            None => {
                let _ = writeln!(out, "  g{goid} -> g{next} [style=dashed, label=\"waits for\"];");
            }
        }
    }
    out.push_str("}\n");
    out
}

/// The file a finding's graph goes to: its [`safe_id`] and `.dot`.
pub fn file_name(finding: &Finding) -> String {
    format!("{}.dot", safe_id(finding))
}

/// The finding's id with every character outside `[A-Za-z0-9.-]` replaced by `_` (ids hold `:`
/// and `/`), for file names.
pub fn safe_id(finding: &Finding) -> String {
    finding.id.to_string().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// What the goroutine waits on: `chan 0x…` or `lock 0x…`.
fn waited_on(g: &Involved) -> Option<String> {
    g.channel.as_ref().map(|c| format!("chan {c}")).or_else(|| g.lock.as_ref().map(|l| format!("lock {l}")))
}

/// `goroutine 18`, its wait and for how long, and where it blocked.
fn goroutine_label(g: &Involved) -> String {
    let secs = g.waiting_for_ns as f64 / 1e9;
    let at_least = if g.waiting_for_is_lower_bound { ">" } else { "" };
    let mut label = format!("goroutine {}\n{} for {at_least}{secs:.1}s", g.goid, g.wait_reason);
    let site = g.site.as_ref().or_else(|| g.stack.iter().find(|f| !f.function.starts_with("runtime.")));
    if let Some(site) = site {
        let file = site.file.rsplit('/').next().unwrap_or(&site.file);
        let _ = write!(label, "\n{}\n{file}:{}", site.function, site.line);
    }
    label
}

/// A DOT double-quoted string (`\n` stays a DOT line break).
fn quoted(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::{FindingType, Grade},
        model::Location,
    };

    fn involved(goid: u64, channel: &str, line: u32) -> Involved {
        Involved {
            goid,
            wait_reason: "chan send".into(),
            channel: Some(channel.into()),
            lock: None,
            waiting_for_ns: 12_500_000_000,
            waiting_for_is_lower_bound: false,
            stack: Vec::new(),
            site: Some(Location::new(format!("main.worker{goid}"), "/src/main.go", line)),
        }
    }

    fn deadlock() -> Finding {
        Finding {
            id: crate::detect::FindingKey::Deadlock { pid: 1, goroutines: vec![6, 7] },
            finding_type: FindingType::Deadlock,
            grade: Grade::Proven,
            pid: 1,
            goroutines: vec![involved(6, "0xc000010000", 40), involved(7, "0xc000010100", 50)],
            chain: vec![6, 7],
            summary: "goroutines 6 and 7 \"wait\" on each other".into(),
        }
    }

    #[test]
    fn a_deadlock_is_a_cycle_through_the_channels() {
        let dot = finding_graph(&deadlock());
        for line in [
            "g6 -> o0 [label=\"chan send\"];",
            "o0 -> g7 [style=dashed",
            "g7 -> o1 [label=\"chan send\"];",
            "o1 -> g6 [style=dashed",
            "o0 [shape=ellipse, label=\"chan 0xc000010000\"];",
        ] {
            assert!(dot.contains(line), "{line:?} missing:\n{dot}");
        }
        assert!(dot.contains("goroutine 6\\nchan send for 12.5s\\nmain.worker6\\nmain.go:40"), "{dot}");
        assert!(dot.contains("6 and 7 \\\"wait\\\""), "quotes escaped:\n{dot}");
    }

    #[test]
    fn file_names_are_safe() {
        let mut f = deadlock();
        f.id = crate::detect::FindingKey::leak(1, Some(&Location::new("main.(*T).run", "/a/b.go", 9)), "chan send");
        assert_eq!(file_name(&f), "leak_1_main.__T_.run_9_chan_send.dot");
    }

    #[test]
    fn goroutines_waiting_on_one_channel_share_its_node() {
        let mut leak = deadlock();
        leak.finding_type = FindingType::Leak;
        leak.chain.clear();
        leak.goroutines[1].channel = leak.goroutines[0].channel.clone();
        let dot = finding_graph(&leak);
        assert_eq!(dot.matches("shape=ellipse").count(), 1, "{dot}");
        assert!(dot.contains("g6 -> o0") && dot.contains("g7 -> o0"), "{dot}");
        assert!(!dot.contains("dashed"), "a leak has no chain:\n{dot}");
    }

    /// Debian's graphviz renders it (skipped where `dot` is not installed).
    #[test]
    fn graphviz_renders_it() {
        use std::io::Write as _;
        let Ok(mut child) = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIP: graphviz's dot is not installed");
            return;
        };
        child.stdin.take().unwrap().write_all(finding_graph(&deadlock()).as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dot failed: {}", String::from_utf8_lossy(&out.stderr));
        let svg = String::from_utf8_lossy(&out.stdout);
        for text in ["goroutine 6", "goroutine 7", "chan 0xc000010000", "main.go:50", "only it can act"] {
            assert!(svg.contains(text), "{text:?} missing from the SVG:\n{svg}");
        }
    }
}
