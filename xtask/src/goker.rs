//! `cargo xtask goker`: goscope scored on the GoKer blocking-bug kernels that Go ships for its
//! goroutine leak profile tests (see tests/src/goker.rs), against the runtime's own verdict, and
//! checked for false leak/deadlock findings on healthy programs (tests/src/healthy.rs).
//!
//! Per kernel run: manifested (the runtime's leak profile lists leaked goroutines), detected (a
//! leak/deadlock finding names one of them), completeness (the fraction of them findings name),
//! time to detection (goscope attached → that first finding), and goroutines findings name that the
//! runtime did not list. Recall counts only runs where the bug manifested.
use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use goscope_tests::{
    goker::{self, BugClass, FindingTypes, Kernel, KernelRun},
    healthy,
};
use regex::Regex;
use serde_json::{Value, json};

use crate::{check, workspace_root};

pub struct Options {
    pub runs: usize,
    pub kernel: Option<Regex>,
    pub duration: Duration,
    pub threshold: Duration,
    pub jobs: usize,
    pub healthy_duration: Duration,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let start = Instant::now();
    let root = workspace_root();
    check(crate::bootstrap::cargo().current_dir(&root).args(["build", "--release", "-p", "goscope"]))?;
    let goscope = root.join("target/release/goscope");
    let kernels: Vec<Kernel> =
        goker::kernels()?.into_iter().filter(|k| opts.kernel.as_ref().is_none_or(|re| re.is_match(&k.name))).collect();
    let binary = goker::build()?;
    eprintln!(
        "goker: {} kernels of {} x {} runs, {} at a time, watching up to {:?} each",
        kernels.len(),
        goker::kernel_go_version()?,
        opts.runs,
        opts.jobs,
        opts.duration
    );

    let runs = run_kernels(&binary, &goscope, &kernels, opts);
    let healthy = if opts.healthy_duration.is_zero() {
        Vec::new()
    } else {
        eprintln!("goker: healthy programs, {} at once, {:?} each", healthy::MODES.len(), opts.healthy_duration);
        healthy::watch_all(&goscope, opts.healthy_duration, opts.threshold)
    };

    println!("\nclass rule: {}\n", BugClass::RULE);
    print_class_table(&kernels, &runs);
    print_kernel_table(&kernels, &runs);
    print_healthy(&healthy);
    print_targets(&kernels, &runs, &healthy);
    let took = start.elapsed();
    println!("\ntotal time {:.0}s", took.as_secs_f64());

    let dir = root.join("target/goker");
    fs::create_dir_all(&dir)?;
    let report = dir.join("report.json");
    fs::write(&report, serde_json::to_string_pretty(&report_json(&kernels, &runs, &healthy, opts, took))?)?;
    println!("report: {}", report.display());
    Ok(())
}

/// Every run of every kernel, `opts.jobs` at a time; per kernel, in run order.
fn run_kernels(binary: &Path, goscope: &Path, kernels: &[Kernel], opts: &Options) -> Vec<Vec<anyhow::Result<KernelRun>>> {
    let queue = Mutex::new((0..opts.runs).flat_map(|run| (0..kernels.len()).map(move |k| (k, run))));
    let results = Mutex::new(BTreeMap::new());
    thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| {
                loop {
                    let Some((k, run)) = queue.lock().expect("queue").next() else { break };
                    let kernel = &kernels[k];
                    let result = goker::run_kernel(binary, goscope, kernel, opts.duration, opts.threshold);
                    eprintln!("  {:<16} run {}: {}", kernel.name, run + 1, describe(&result));
                    results.lock().expect("results").insert((k, run), result);
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    (0..kernels.len()).map(|k| (0..opts.runs).filter_map(|run| results.remove(&(k, run))).collect()).collect()
}

fn describe(result: &anyhow::Result<KernelRun>) -> String {
    match result {
        Err(e) => format!("ERROR {e:#}"),
        Ok(r) if !r.manifested() => "did not manifest".to_string(),
        Ok(r) => format!(
            "{} leaked, {} named ({}){}{}",
            r.leaked.len(),
            r.named_leaked(),
            r.finding_type().map_or("-", FindingTypes::name),
            r.time_to_detection.map(|t| format!(" after {:.1}s", t.as_secs_f64())).unwrap_or_default(),
            if r.false_goids().is_empty() { String::new() } else { format!(", {} not in the profile", r.false_goids().len()) }
        ),
    }
}

/// The figures of a set of runs.
#[derive(Default)]
struct Score {
    kernels: usize,
    runs: usize,
    errors: usize,
    manifested: usize,
    detected: usize,
    completeness: Vec<f64>,
    detection_secs: Vec<f64>,
    false_goids: usize,
    /// Manifested runs by the finding type of their leaked goroutines.
    types: BTreeMap<FindingTypes, usize>,
}

impl Score {
    fn of<'a>(kernel_runs: impl IntoIterator<Item = &'a Vec<anyhow::Result<KernelRun>>>) -> Score {
        let mut score = Score::default();
        for runs in kernel_runs {
            score.kernels += 1;
            for run in runs {
                score.runs += 1;
                let Ok(run) = run else {
                    score.errors += 1;
                    continue;
                };
                score.false_goids += run.false_goids().len();
                if !run.manifested() {
                    continue;
                }
                score.manifested += 1;
                *score.types.entry(run.finding_type().unwrap_or(FindingTypes::Unnamed)).or_default() += 1;
                score.completeness.push(run.completeness());
                if run.detected() {
                    score.detected += 1;
                }
                score.detection_secs.extend(run.time_to_detection.map(|t| t.as_secs_f64()));
            }
        }
        score
    }

    fn recall(&self) -> Option<f64> {
        (self.manifested > 0).then(|| self.detected as f64 / self.manifested as f64)
    }

    fn mean_completeness(&self) -> Option<f64> {
        (!self.completeness.is_empty()).then(|| self.completeness.iter().sum::<f64>() / self.completeness.len() as f64)
    }

    fn median_detection(&self) -> Option<f64> {
        let mut v = self.detection_secs.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// Manifested runs by type: `deadlock/leak/both/unnamed`.
    fn types_text(&self) -> String {
        FindingTypes::ALL.iter().map(|t| self.types.get(t).copied().unwrap_or(0).to_string()).collect::<Vec<_>>().join("/")
    }

    fn row(&self, label: &str) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
        format!(
            "{label:<18} {:>7} {:>5} {:>6} {:>10} {:>8} {:>6} {:>12} {:>14} {:>9} {:>11}",
            self.kernels,
            self.runs,
            self.errors,
            self.manifested,
            self.detected,
            pct(self.recall()),
            pct(self.mean_completeness()),
            self.median_detection().map_or("-".to_string(), |s| format!("{s:.1}s")),
            self.false_goids,
            self.types_text(),
        )
    }

    fn json(&self) -> Value {
        json!({
            "kernels": self.kernels, "runs": self.runs, "errors": self.errors, "manifested": self.manifested,
            "detected": self.detected, "recall": self.recall(), "mean_completeness": self.mean_completeness(),
            "median_time_to_detection_s": self.median_detection(), "goids_not_in_profile": self.false_goids,
            "types": self.types.iter().map(|(t, n)| (t.name().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

const HEADER: &str = "kernels  runs errors manifested detected recall completeness time-to-detect not-leaked        type";

fn print_class_table(kernels: &[Kernel], runs: &[Vec<anyhow::Result<KernelRun>>]) {
    println!("{:<18} {HEADER}", "class");
    for class in BugClass::ALL {
        let of_class = kernels.iter().zip(runs).filter(|(k, _)| k.class() == class).map(|(_, r)| r);
        let score = Score::of(of_class);
        if score.kernels > 0 {
            println!("{}", score.row(class.name()));
        }
    }
    println!("{}", Score::of(runs).row("all"));
    println!(
        "(recall = detected / manifested runs; completeness = leaked goroutines named / leaked, mean over manifested runs; \
         time to detection from goscope's attached line, median over detected runs; not-leaked = goroutines that \
         leak/deadlock findings name and the runtime's profile does not list; type = manifested runs whose leaked \
         goroutines are all named by deadlock findings / all by leak findings / by both / not all named; a goroutine's \
         proven findings where it has some)\n"
    );
}

fn print_kernel_table(kernels: &[Kernel], runs: &[Vec<anyhow::Result<KernelRun>>]) {
    println!(
        "{:<18} {:<23} {:>5} {:>6} {:>10} {:>8} {:>12} {:>14} {:>9} {:>11}  leaked (mean)",
        "kernel", "class", "runs", "errors", "manifested", "detected", "completeness", "time-to-detect", "not-leaked", "type"
    );
    for (kernel, runs) in kernels.iter().zip(runs) {
        let score = Score::of([runs]);
        let leaked: Vec<usize> = runs.iter().flatten().filter(|r| r.manifested()).map(|r| r.leaked.len()).collect();
        let class = format!("{}{}", kernel.class(), if kernel.deterministic { "" } else { " (flaky)" });
        println!(
            "{:<18} {class:<23} {:>5} {:>6} {:>10} {:>8} {:>12} {:>14} {:>9} {:>11}  {}",
            kernel.name,
            score.runs,
            score.errors,
            score.manifested,
            score.detected,
            score.mean_completeness().map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0)),
            score.median_detection().map_or("-".to_string(), |s| format!("{s:.1}s")),
            score.false_goids,
            score.types_text(),
            if leaked.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", leaked.iter().sum::<usize>() as f64 / leaked.len() as f64)
            },
        );
    }
}

fn print_healthy(healthy: &[anyhow::Result<healthy::HealthyRun>]) {
    if healthy.is_empty() {
        return;
    }
    println!("\nhealthy programs (leak/deadlock findings must be 0):");
    for (mode, run) in healthy::MODES.iter().zip(healthy) {
        match run {
            Err(e) => println!("  {mode:<12} ERROR {e:#}"),
            Ok(run) => {
                println!("  {mode:<12} {} leak/deadlock, {} blocked", run.false_findings.len(), run.blocked);
                for f in &run.false_findings {
                    println!("      {} [{}] {}", f["type"], f["grade"], f["summary"]);
                }
            }
        }
    }
}

fn report_json(
    kernels: &[Kernel],
    runs: &[Vec<anyhow::Result<KernelRun>>],
    healthy: &[anyhow::Result<healthy::HealthyRun>],
    opts: &Options,
    took: Duration,
) -> Value {
    let classes: serde_json::Map<String, Value> = BugClass::ALL
        .iter()
        .map(|&c| {
            (c.name().to_string(), Score::of(kernels.iter().zip(runs).filter(|(k, _)| k.class() == c).map(|(_, r)| r)).json())
        })
        .collect();
    let kernel_reports: Vec<Value> = kernels
        .iter()
        .zip(runs)
        .map(|(k, runs)| {
            json!({
                "kernel": k.name, "class": k.class().name(), "deterministic": k.deterministic, "uses_context": k.uses_context,
                "expected": k.expected.iter().map(|l| &l.pattern).collect::<Vec<_>>(),
                "score": Score::of([runs]).json(),
                "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let healthy: Vec<Value> = healthy::MODES
        .iter()
        .zip(healthy)
        .map(|(mode, run)| match run {
            Ok(run) => json!({"mode": mode, "blocked": run.blocked, "false_findings": run.false_findings}),
            Err(e) => json!({"mode": mode, "error": format!("{e:#}")}),
        })
        .collect();
    json!({
        "class_rule": BugClass::RULE,
        "options": {"runs": opts.runs, "kernel": opts.kernel.as_ref().map(Regex::as_str), "watch_s": opts.duration.as_secs_f64(),
                    "block_threshold_s": opts.threshold.as_secs_f64(), "jobs": opts.jobs, "healthy_watch_s": opts.healthy_duration.as_secs_f64()},
        "total": Score::of(runs).json(),
        "classes": classes,
        "kernels": kernel_reports,
        "healthy": healthy,
        "took_s": took.as_secs_f64(),
    })
}

fn run_json(run: &anyhow::Result<KernelRun>) -> Value {
    let run = match run {
        Ok(run) => run,
        Err(e) => return json!({"error": format!("{e:#}")}),
    };
    json!({
        "manifested": run.manifested(),
        "detected": run.detected(),
        "completeness": run.completeness(),
        "type": run.finding_type().map(FindingTypes::name),
        "time_to_detection_s": run.time_to_detection.map(|t| t.as_secs_f64()),
        "attach_s": run.attach_time.as_secs_f64(),
        "leaked": run.leaked.values().map(|l| json!({"goid": l.goid, "wait_reason": l.wait_reason, "function": l.function})).collect::<Vec<_>>(),
        "goids_not_in_profile": run.false_goids(),
        "findings": run.findings.iter().map(|f| json!({
            "id": f["id"], "type": f["type"], "grade": f["grade"], "summary": f["summary"],
            "goids": goker::named_goids(f),
        })).collect::<Vec<_>>(),
    })
}

/// The targets: recall >= 95% on channel kernels, >= 90% overall, no leak/deadlock finding
/// on a healthy program.
/// goscope's proven set against the runtime's leak profile, run by manifested run: how many runs
/// agree exactly, and the goroutines on either side only, with the kernels where they differ.
fn print_differential(kernels: &[Kernel], runs: &[Vec<anyhow::Result<KernelRun>>]) {
    let (mut manifested, mut exact, mut unproven, mut extra) = (0, 0, 0, 0);
    let mut differing = Vec::new();
    for (kernel, runs) in kernels.iter().zip(runs) {
        for run in runs.iter().flatten().filter(|r| r.manifested()) {
            manifested += 1;
            let (missing, more) = run.proof_disagreements();
            if missing.is_empty() && more.is_empty() {
                exact += 1;
            } else {
                differing.push(format!("{} (-{} +{})", kernel.name, missing.len(), more.len()));
            }
            unproven += missing.len();
            extra += more.len();
        }
    }
    println!(
        "  proven == profile {exact} of {manifested} manifested runs; {unproven} leaked goroutines not proven, \
         {extra} proven that the profile does not list"
    );
    if !differing.is_empty() {
        println!("    differ: {}", differing.join(", "));
    }
}

fn print_targets(kernels: &[Kernel], runs: &[Vec<anyhow::Result<KernelRun>>], healthy: &[anyhow::Result<healthy::HealthyRun>]) {
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    let channel = Score::of(kernels.iter().zip(runs).filter(|(k, _)| k.class() == BugClass::Channel).map(|(_, r)| r)).recall();
    let all = Score::of(runs).recall();
    println!(
        "
targets:"
    );
    for (label, recall, target) in [("channel recall", channel, 0.95), ("overall recall", all, 0.90)] {
        let shown = recall.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
        println!("  {label:<16} {shown:>5} (>= {:.0}%): {}", target * 100.0, verdict(recall.is_some_and(|r| r >= target)));
    }
    print_differential(kernels, runs);
    if !healthy.is_empty() {
        let false_findings: usize = healthy.iter().flatten().map(|r| r.false_findings.len()).sum();
        let errors = healthy.iter().filter(|r| r.is_err()).count();
        println!(
            "  healthy          {false_findings} leak/deadlock findings, {errors} errors (0): {}",
            verdict(false_findings == 0 && errors == 0)
        );
    }
}
