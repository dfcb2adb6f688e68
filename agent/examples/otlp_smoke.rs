//! Drives goscope's OTLP exporter with synthetic goroutine activity, without eBPF: a few blocking
//! episodes, goroutine exits, a deadlock finding and its retraction, gauges and health.
//!
//! ```text
//! cargo run -p goscope --example otlp_smoke -- GO_BINARY [--otlp-endpoint URL] [--otlp-protocol grpc|http/protobuf] [--rounds N]
//! ```
//!
//! GO_BINARY is any Go executable goscope supports (its wait-reason table and symbols are used).
//! Prints one JSON line: the IDs it used, the exporter's final counts, and the longest any single
//! recording call took (`max_call_us`: they must never wait for the backend).
use std::time::Duration;

use clap::Parser;
use goscope::{
    detect::{Finding, FindingKey, FindingType, Grade, Involved},
    model::{
        events::{EventDetail, GoroutineEvent},
        state::{ProcessState, WaitReasons},
    },
    sink::otlp::{Health, OtlpArgs, OtlpExporter, ProbeHealth, ProcessInfo},
    target::TargetContext,
};
use goscope_inspect::GoBinary;

#[derive(Parser)]
struct Args {
    /// A Go executable.
    binary: std::path::PathBuf,
    /// PID to report in the resource (default: this process).
    #[arg(long)]
    pid: Option<u32>,
    /// Repeat the scenario this many times (goroutine ids offset per round).
    #[arg(long, default_value_t = 1)]
    rounds: u64,
    /// Pause between rounds.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Skip the retraction.
    #[arg(long)]
    keep_finding: bool,
    #[command(flatten)]
    otlp: OtlpArgs,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes only the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = GoBinary::open(&args.binary)?;
    let pid = args.pid.unwrap_or_else(std::process::id);
    let info = ProcessInfo::from_pid(pid, &args.binary.to_string_lossy(), &binary, args.otlp.otlp_command_args);
    let Some(exporter) = OtlpExporter::start(&args.otlp, &info)? else {
        anyhow::bail!("no OTLP endpoint configured (--otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)");
    };
    let names = binary.wait_reasons().names().to_vec();
    let code = |name: &str| names.iter().position(|n| n == name).map(|c| c as u8).unwrap_or(0);
    let (chan_send, chan_recv) = (code("chan send"), code("chan receive"));
    let hchan_lock = binary.layout().hchan_lock;
    let mut state = ProcessState::new(pid, WaitReasons::new(names.clone()), hchan_lock);
    let ctx = TargetContext { pid, binary: binary.into(), load_bias: 0, attached_at_ns: now_ns() };
    let ev = |goid, ts_ns, detail| GoroutineEvent { ts_ns, pid, tid: pid, goid, detail };
    let chan = 0xc0_0001_0000_u64;
    let mut ids = Vec::new();
    let mut max_call = Duration::ZERO;
    let mut timed = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        max_call = max_call.max(t.elapsed());
    };
    for round in 0..args.rounds {
        let base = 100 + round * 10;
        let (parent, worker, waker) = (base + 1, base + 2, base + 3);
        let t0 = now_ns();
        for (goid, parent_goid) in [(parent, 1), (worker, parent), (waker, parent)] {
            state.apply(&ev(goid, t0, EventDetail::Created { parent_goid, creation_pc: 0, start_pc: 0 }));
        }
        // worker blocks 250 ms receiving (exported as a span), waker blocks 1 ms sending (not).
        state.apply(&ev(
            worker,
            t0,
            EventDetail::Parked {
                wait_reason: chan_recv,
                lock_addr: chan + u64::from(hchan_lock),
                g_addr: 0,
                sema_addr: 0,
                return_pcs: Default::default(),
            },
        ));
        state.apply(&ev(
            waker,
            t0,
            EventDetail::Parked {
                wait_reason: chan_send,
                lock_addr: chan + u64::from(hchan_lock),
                g_addr: 0,
                sema_addr: 0,
                return_pcs: Default::default(),
            },
        ));
        state.set_channel_info(chan, 3, false, Some("main.Job".into()));
        for (goid, waker_goid, after) in [(waker, 0, 1_000_000), (worker, waker, 250_000_000)] {
            if let Some(t) = state.apply(&ev(goid, t0 + after, EventDetail::Ready { waker_goid })) {
                timed(&mut || exporter.blocking_episode(&t, &state, &ctx));
            }
        }
        for goid in [worker, waker] {
            if let Some(t) = state.apply(&ev(goid, t0 + 300_000_000, EventDetail::Exited)) {
                timed(&mut || exporter.goroutine_exited(&t, &ctx));
            }
        }
        timed(&mut || exporter.observe_state(&state));
        let involved = |goid, ch: &str| Involved {
            goid,
            wait_reason: "chan send".into(),
            channel: Some(ch.into()),
            lock: None,
            waiting_for_ns: 3_000_000_000,
            waiting_for_is_lower_bound: false,
            stack: Vec::new(),
            site: None,
        };
        let finding = Finding {
            id: FindingKey::Deadlock { pid, goroutines: vec![base + 4, base + 5] },
            finding_type: FindingType::Deadlock,
            grade: Grade::Proven,
            pid,
            goroutines: vec![involved(base + 4, "0xc000020000"), involved(base + 5, "0xc000020100")],
            chain: vec![base + 4, base + 5],
            summary: format!("goroutines {} and {} wait on each other", base + 4, base + 5),
        };
        timed(&mut || exporter.finding(&finding, &state));
        if !args.keep_finding {
            timed(&mut || exporter.finding_retracted(&finding));
        }
        let health = Health {
            events: 12 * (round + 1),
            lost: 0,
            dropped: 0,
            undecodable: 0,
            attach_failures: 0,
            probes: vec![ProbeHealth { name: "goroutine_parked", hits: 2 * (round + 1), emulated: true, read_failures: 0 }],
        };
        timed(&mut || exporter.health(&health));
        ids.push(serde_json::json!({"worker": worker, "waker": waker, "parent": parent, "finding": finding.id}));
        std::thread::sleep(args.pause);
    }
    let t = std::time::Instant::now();
    let stats = exporter.shutdown();
    println!(
        "{}",
        serde_json::json!({"rounds": ids, "stats": stats, "max_call_us": max_call.as_micros() as u64, "shutdown_ms": t.elapsed().as_millis() as u64})
    );
    Ok(())
}
