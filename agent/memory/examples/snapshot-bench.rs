//! Times snapshots of a running Go process: `snapshot-bench PID [ROUNDS] [--no-stacks] [--reach]`.
//! Prints one line per round and the median. With `--reach`, each round also runs the leak
//! analysis (`find_leaked`) over the snapshot's goroutines and prints its figures; with
//! `--explain` too, the chain of words that reached each blocked goroutine found live, and which
//! leaked goroutines each leaked one could wake (the deadlock evidence).
use std::path::Path;
use std::time::Instant;

use goscope_memory::{ProcessMemory, ReachGoroutine, ReachOptions, SnapshotOptions, find_leaked, snapshot_with};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let pid: u32 = args.get(1).ok_or("usage: snapshot-bench PID [ROUNDS] [--no-stacks] [--reach]")?.parse()?;
    let explain = args.iter().any(|a| a == "--explain");
    let reach = explain || args.iter().any(|a| a == "--reach");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut opts = SnapshotOptions::default();
    if args.iter().any(|a| a == "--no-stacks") {
        opts.stacks = false;
    }
    let exe = format!("/proc/{pid}/exe");
    let bytes = std::fs::read(&exe)?;
    let binary = goscope_inspect::GoBinary::from_bytes(&bytes)?;
    let bias = load_bias(pid, &exe, &bytes, binary.pie())?;
    let mut times = Vec::new();
    for r in 0..rounds {
        let mem = ProcessMemory::new(pid)?;
        let t = Instant::now();
        let snap = snapshot_with(&mem, &binary, bias, &opts)?;
        let took = t.elapsed();
        times.push(took);
        let s = &snap.stats;
        println!(
            "round {r}: {:.2} ms, {} goroutines ({} dead skipped, {} invalid, {} inconsistent, {} retried), {} bytes in {} syscalls",
            took.as_secs_f64() * 1e3,
            s.reported,
            s.dead,
            s.invalid,
            s.inconsistent,
            s.retried,
            s.bytes_read,
            s.syscalls
        );
        if reach {
            let goroutines: Vec<ReachGoroutine> =
                snap.goroutines.iter().filter_map(|g| ReachGoroutine::from_goroutine(g, None)).collect();
            let options = ReachOptions { explain, ..ReachOptions::default() };
            let report = find_leaked(&mem, &binary, bias, &goroutines, &options)?;
            println!(
                "round {r}: reach {:.2} ms, {} leaked (complete: {}), {} objects scanned, {} bytes read; stack frames: {} by \
                 their maps, {} conservative; {} stacks conservative",
                report.elapsed_ns as f64 / 1e6,
                report.leaked.len(),
                report.complete,
                report.objects_scanned,
                report.bytes_read,
                report.stack_frames_precise,
                report.stack_frames_conservative,
                report.stacks_conservative
            );
            if explain {
                println!("  leaked {:?}", report.leaked);
                let mut wakes: Vec<_> = report.could_wake.iter().collect();
                wakes.sort_unstable();
                for (goid, woken) in wakes {
                    println!("  goroutine {goid} could wake {woken:?}");
                }
                for g in &snap.goroutines {
                    let (status, reason) = (g.status.name(), g.wait_reason.as_deref().unwrap_or(""));
                    println!("  goroutine {} at {:#x}: {status} {reason} {:?}", g.goid, g.g_addr, g.start_function);
                }
            }
            let mut why: Vec<_> = report.why_live.iter().collect();
            why.sort_unstable_by_key(|(goid, _)| **goid);
            for (goid, links) in why {
                println!("  goroutine {goid} is live through:");
                for l in links {
                    println!("    {:x?} word at {:#x} = {:#x}", l.holder, l.addr, l.value);
                }
            }
        }
    }
    times.sort();
    println!("median {:.2} ms", times[times.len() / 2].as_secs_f64() * 1e3);
    Ok(())
}

/// PIE: where the mapping at file offset 0 starts, minus the link-time address of file offset 0
/// (the first PT_LOAD's `p_vaddr - p_offset`).
fn load_bias(pid: u32, exe: &str, elf: &[u8], pie: bool) -> Result<u64, Box<dyn std::error::Error>> {
    if !pie {
        return Ok(0);
    }
    let rd = |o: usize, n: usize| -> Result<u64, Box<dyn std::error::Error>> {
        let b = elf.get(o..o + n).ok_or("short ELF")?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    };
    let (phoff, phentsize, phnum) = (rd(0x20, 8)? as usize, rd(0x36, 2)? as usize, rd(0x38, 2)? as usize);
    let mut link_base = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if rd(ph, 4)? == 1 {
            link_base = Some(rd(ph + 0x10, 8)? - rd(ph + 8, 8)?);
            break;
        }
    }
    let link_base = link_base.ok_or("no PT_LOAD")?;
    let target = std::fs::read_link(Path::new(exe))?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && Path::new(f[5]) == target && u64::from_str_radix(f[2], 16)? == 0 {
            return Ok(u64::from_str_radix(f[0].split('-').next().unwrap_or("0"), 16)? - link_base);
        }
    }
    Err("executable mapping not found".into())
}
