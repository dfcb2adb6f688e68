//! Runtime struct offsets: from DWARF when the binary has it, else from the checked-in tables in
//! `offsets/go1.NN.txt` (generated from real binaries' DWARF by `examples/gen-offsets.rs`, which
//! `cargo xtask offsets` runs on a program built with every tested Go release).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dwarf::StructInfo;

/// Where [`RuntimeLayout`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetsSource {
    /// Read from the binary's own DWARF.
    Dwarf,
    /// Taken from the checked-in per-version table (stripped binary).
    Table,
}

macro_rules! layout {
    ($( $(#[$doc:meta])* $field:ident : $ty:ident = $key:literal ; )*) => {
        /// Byte offsets of the runtime struct fields the agent reads. Keys of
        /// [`RuntimeLayout::entries`] are "runtime.<type>.<field>" (nested gobuf fields as
        /// "runtime.g.sched.sp", absolute inside `g`).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        pub struct RuntimeLayout {
            $( $(#[$doc])* pub $field: layout!(@ty $ty), )*
        }

        impl RuntimeLayout {
            /// Every field as "runtime.g.goid" -> offset (absent optional fields are left out).
            pub fn entries(&self) -> BTreeMap<String, u32> {
                let mut m = BTreeMap::new();
                $( layout!(@put m, self.$field, $ty, $key); )*
                m
            }

            /// Builds a layout from "key -> offset" pairs; Err names the first missing
            /// required key.
            pub fn from_entries(e: &BTreeMap<String, u32>) -> Result<RuntimeLayout, String> {
                Ok(RuntimeLayout {
                    $( $field: layout!(@get e, $ty, $key), )*
                })
            }

            /// All keys with whether they are required.
            pub fn keys() -> &'static [(&'static str, bool)] {
                &[ $( ($key, layout!(@req $ty)), )* ]
            }
        }
    };
    (@ty req) => { u32 };
    (@ty opt) => { Option<u32> };
    (@req req) => { true };
    (@req opt) => { false };
    (@put $m:ident, $v:expr, req, $key:literal) => { $m.insert($key.to_string(), $v); };
    (@put $m:ident, $v:expr, opt, $key:literal) => { if let Some(v) = $v { $m.insert($key.to_string(), v); } };
    (@get $e:ident, req, $key:literal) => { *$e.get($key).ok_or_else(|| $key.to_string())? };
    (@get $e:ident, opt, $key:literal) => { $e.get($key).copied() };
}

layout! {
    /// `g.goid` (int64 in 1.19, uint64 later).
    g_goid: req = "runtime.g.goid";
    /// `g.atomicstatus` (uint32 / atomic.Uint32; mask off `_Gscan` 0x1000).
    g_atomicstatus: req = "runtime.g.atomicstatus";
    /// `g.waitreason` (uint8).
    g_waitreason: req = "runtime.g.waitreason";
    /// `g.waitsince` (set by the GC, not at park time).
    g_waitsince: req = "runtime.g.waitsince";
    /// `g.waiting` (*sudog list of a parked goroutine).
    g_waiting: req = "runtime.g.waiting";
    /// `g.parentGoid` (absent before Go 1.21).
    g_parent_goid: opt = "runtime.g.parentGoid";
    /// `g.trackingSeq` (uint8): casgstatus adds one on every transition out of `_Grunning` (from
    /// Go 1.26 also out of `_Gsyscall`), so a parked goroutine whose value did not change did not
    /// run in between (modulo 256).
    g_tracking_seq: opt = "runtime.g.trackingSeq";
    /// `g.lockedm`: the M a goroutine is locked to (runtime.LockOSThread), 0 when none.
    g_lockedm: opt = "runtime.g.lockedm";
    /// `g.gopc`: PC of the `go` statement.
    g_gopc: req = "runtime.g.gopc";
    /// `g.startpc`: PC of the goroutine function.
    g_startpc: req = "runtime.g.startpc";
    /// `g.m`.
    g_m: req = "runtime.g.m";
    /// `g.sched` (a gobuf).
    g_sched: req = "runtime.g.sched";
    /// `g.sched.sp`, absolute offset inside g.
    g_sched_sp: req = "runtime.g.sched.sp";
    /// `g.sched.pc`, absolute offset inside g.
    g_sched_pc: req = "runtime.g.sched.pc";
    /// `g.sched.bp`, absolute offset inside g.
    g_sched_bp: req = "runtime.g.sched.bp";
    /// `g.labels` (pprof labels pointer).
    g_labels: req = "runtime.g.labels";
    /// sizeof(runtime.g), when known.
    g_size: opt = "runtime.g.sizeof";
    /// `m.curg`.
    m_curg: req = "runtime.m.curg";
    /// `m.procid` (Linux TID).
    m_procid: req = "runtime.m.procid";
    /// `sudog.g`.
    sudog_g: req = "runtime.sudog.g";
    /// `sudog.next`.
    sudog_next: req = "runtime.sudog.next";
    /// `sudog.elem` — the word to read (Go 1.26+: `elem.vu`).
    sudog_elem: req = "runtime.sudog.elem";
    /// `sudog.c` — the word to read (Go 1.26+: `c.vu`, e.g. 96, not the struct start 88).
    sudog_c: req = "runtime.sudog.c";
    /// `sudog.waitlink`.
    sudog_waitlink: req = "runtime.sudog.waitlink";
    /// `sudog.isSelect` (bool).
    sudog_is_select: req = "runtime.sudog.isSelect";
    /// `hchan.qcount`.
    hchan_qcount: req = "runtime.hchan.qcount";
    /// `hchan.dataqsiz`.
    hchan_dataqsiz: req = "runtime.hchan.dataqsiz";
    /// `hchan.buf`.
    hchan_buf: req = "runtime.hchan.buf";
    /// `hchan.elemsize` (uint16).
    hchan_elemsize: req = "runtime.hchan.elemsize";
    /// `hchan.closed` (uint32).
    hchan_closed: req = "runtime.hchan.closed";
    /// `hchan.elemtype`.
    hchan_elemtype: req = "runtime.hchan.elemtype";
    /// `hchan.sendx`.
    hchan_sendx: req = "runtime.hchan.sendx";
    /// `hchan.recvx`.
    hchan_recvx: req = "runtime.hchan.recvx";
    /// `hchan.recvq` (waitq).
    hchan_recvq: req = "runtime.hchan.recvq";
    /// `hchan.sendq` (waitq).
    hchan_sendq: req = "runtime.hchan.sendq";
    /// `hchan.lock` (at gopark for chan send/recv, RBX = &c.lock).
    hchan_lock: req = "runtime.hchan.lock";
    /// `waitq.first`.
    waitq_first: req = "runtime.waitq.first";
    /// `waitq.last`.
    waitq_last: req = "runtime.waitq.last";
    /// `mheap.arenas`: `[1 << arenaL1Bits]*[1 << arenaL2Bits]*heapArena` (linux/amd64: one L1 entry).
    mheap_arenas: opt = "runtime.mheap.arenas";
    /// `heapArena.spans`: `[pagesPerArena]*mspan`, the span of each 8 KiB page.
    heap_arena_spans: opt = "runtime.heapArena.spans";
    /// `mspan.startAddr`.
    mspan_start_addr: opt = "runtime.mspan.startAddr";
    /// `mspan.npages`.
    mspan_npages: opt = "runtime.mspan.npages";
    /// `mspan.elemsize`.
    mspan_elemsize: opt = "runtime.mspan.elemsize";
    /// `mspan.spanclass` (uint8: size class << 1 | noscan).
    mspan_spanclass: opt = "runtime.mspan.spanclass";
    /// `mspan.state` (uint8 inside mSpanStateBox; mSpanInUse = 1).
    mspan_state: opt = "runtime.mspan.state";
    /// `moduledata.data`: start of the pointer-bearing initialized globals.
    moduledata_data: opt = "runtime.moduledata.data";
    /// `moduledata.edata`.
    moduledata_edata: opt = "runtime.moduledata.edata";
    /// `moduledata.bss`: start of the pointer-bearing zeroed globals.
    moduledata_bss: opt = "runtime.moduledata.bss";
    /// `moduledata.ebss`.
    moduledata_ebss: opt = "runtime.moduledata.ebss";
}

/// Builds the entry map from DWARF structs. Members whose type is a `{vp, vu}` pair
/// (Go 1.26 `maybeTraceablePtr`/`maybeTraceableChan`) are reported at their `vu` word.
pub(crate) fn entries_from_dwarf(structs: &HashMap<String, StructInfo>) -> BTreeMap<String, u32> {
    let mut e = BTreeMap::new();
    let get = |ty: &str, field: &str| -> Option<(u64, Option<u64>)> {
        let m = structs.get(ty)?.members.get(field)?;
        Some((m.offset, m.vu))
    };
    let mut put = |key: &str, v: Option<u64>| {
        if let Some(v) = v.and_then(|v| u32::try_from(v).ok()) {
            e.insert(key.to_string(), v);
        }
    };
    for (key, _) in RuntimeLayout::keys() {
        let parts: Vec<&str> = key.split('.').collect();
        // "runtime", ty, field [, subfield]
        if parts.len() < 3 {
            continue;
        }
        let ty = format!("runtime.{}", parts[1]);
        match (parts[1], parts[2], parts.get(3)) {
            ("g", "sizeof", None) => put(key, structs.get("runtime.g").and_then(|s| s.size)),
            ("g", "sched", Some(sub)) => {
                let base = get("runtime.g", "sched").map(|(o, _)| o);
                let inner = get("runtime.gobuf", sub).map(|(o, _)| o);
                put(key, base.zip(inner).and_then(|(a, b)| a.checked_add(b)));
            }
            (_, field, None) => put(key, get(&ty, field).and_then(|(o, vu)| o.checked_add(vu.unwrap_or(0)))),
            _ => {}
        }
    }
    e
}

/// A checked-in per-version table.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub minor: u32,
    pub generated_from: String,
    pub entries: BTreeMap<String, u32>,
    pub wait_reasons: Vec<String>,
}

pub(crate) fn parse_table(minor: u32, text: &str) -> Result<Table, String> {
    let mut t = Table { minor, generated_from: String::new(), entries: BTreeMap::new(), wait_reasons: Vec::new() };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "version" => t.generated_from = rest.trim().to_string(),
            "waitreason" => {
                let (idx, name) = rest.split_once(' ').unwrap_or((rest, ""));
                let idx: usize = idx.parse().map_err(|_| format!("line {}: bad index", n + 1))?;
                if idx != t.wait_reasons.len() {
                    return Err(format!("line {}: wait reasons out of order", n + 1));
                }
                t.wait_reasons.push(name.to_string());
            }
            _ => {
                let v: u32 = rest.trim().parse().map_err(|_| format!("line {}: bad offset", n + 1))?;
                t.entries.insert(key.to_string(), v);
            }
        }
    }
    RuntimeLayout::from_entries(&t.entries).map_err(|k| format!("go1.{minor} table lacks {k}"))?;
    Ok(t)
}

/// Minor versions with a checked-in table, oldest first.
const TABLE_SOURCES: &[(u32, &str)] = &[
    (19, include_str!("../offsets/go1.19.txt")),
    (20, include_str!("../offsets/go1.20.txt")),
    (21, include_str!("../offsets/go1.21.txt")),
    (22, include_str!("../offsets/go1.22.txt")),
    (23, include_str!("../offsets/go1.23.txt")),
    (24, include_str!("../offsets/go1.24.txt")),
    (25, include_str!("../offsets/go1.25.txt")),
    (26, include_str!("../offsets/go1.26.txt")),
    (27, include_str!("../offsets/go1.27.txt")),
];

/// The table for Go 1.`minor`.
pub(crate) fn table(minor: u32) -> Option<Table> {
    let (_, text) = TABLE_SOURCES.iter().find(|(m, _)| *m == minor)?;
    parse_table(minor, text).ok()
}

/// Renders a table file (used by the generator example and tests).
pub fn render_table(version: &str, entries: &BTreeMap<String, u32>, wait_reasons: &[String]) -> String {
    let mut s = String::new();
    s.push_str("# goscope-inspect runtime offsets table. Generated from the DWARF and\n");
    s.push_str("# runtime.waitReasonStrings of a real binary built with the version below by\n");
    s.push_str("# `cargo xtask offsets` (examples/gen-offsets.rs); never edit by hand.\n");
    s.push_str(&format!("version {version}\n"));
    for (k, v) in entries {
        s.push_str(&format!("{k} {v}\n"));
    }
    for (i, w) in wait_reasons.iter().enumerate() {
        s.push_str(&format!("waitreason {i} {w}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_tables_parse() {
        for (minor, text) in TABLE_SOURCES {
            let t = parse_table(*minor, text).unwrap_or_else(|e| panic!("go1.{minor}: {e}"));
            assert!(t.generated_from.starts_with(&format!("go1.{minor}")), "{}", t.generated_from);
            assert!(t.wait_reasons.len() >= 27);
            assert_eq!(t.wait_reasons[1], "GC assist marking");
        }
    }

    #[test]
    fn facts_doc_spot_checks() {
        let get = |m: u32, k: &str| table(m).unwrap().entries.get(k).copied();
        assert_eq!(get(19, "runtime.g.goid"), Some(152));
        assert_eq!(get(23, "runtime.g.goid"), Some(160));
        assert_eq!(get(19, "runtime.g.parentGoid"), None);
        assert_eq!(get(26, "runtime.sudog.c"), Some(96));
        assert_eq!(get(25, "runtime.sudog.c"), Some(80));
        assert_eq!(get(25, "runtime.hchan.lock"), Some(104));
        assert_eq!(get(25, "runtime.m.curg"), Some(184));
        assert_eq!(get(21, "runtime.m.curg"), Some(192));
    }
}
