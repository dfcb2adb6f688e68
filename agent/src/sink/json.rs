//! The `--format json` output of `attach` and `run`: one [`OutputLine`] per line. Field names are
//! a public interface (scripts parse them): add fields, never rename or remove.
use std::{collections::BTreeMap, io};

use serde::Serialize;

use crate::{detect::Finding, sink::event::EventRecord, sink::otlp::ExportStats};

/// One line of JSON output, tagged by `kind`: the README's table of line kinds as a type.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputLine<'a> {
    /// The probes are attached and the session begins.
    Attached {
        pid: u32,
        go_version: &'a str,
        /// How the process is watched: probe events, or memory scans alone.
        mode: WatchMode,
        probes: Vec<AttachedProbe<'a>>,
        /// The process's `k8s.*` resource attributes, when it runs in a Kubernetes pod.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        k8s: BTreeMap<&'static str, &'a str>,
    },
    /// The goroutines read from memory at attach.
    Snapshot { pid: u32, goroutines: usize, read_ns: u64, bytes_read: u64 },
    /// The budget governor changed what watches the process.
    Mode {
        pid: u32,
        /// `probes`, `no_semaphore` or `scan`.
        mode: &'static str,
        reason: &'a str,
        /// The estimate behind the change, in percent of one CPU.
        estimated_cost_pct: f64,
        budget_pct: f64,
        /// Probe programs attached now.
        probes_attached: usize,
    },
    /// Events the kernel ring buffer had no room for.
    Lost { pid: u32, count: u64 },
    /// Something goscope could not do, for one process or (`goscope run`) for the host.
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        message: &'a str,
    },
    /// With `--state-every`: goroutine counts (`user_goroutines` counts what
    /// `runtime.NumGoroutine()` counts).
    State {
        pid: u32,
        ts_ns: u64,
        goroutines: usize,
        user_goroutines: usize,
        by_state: BTreeMap<&'static str, usize>,
        by_wait_reason: BTreeMap<String, usize>,
    },
    Finding {
        #[serde(flatten)]
        finding: &'a Finding,
        /// The process's `k8s.*` resource attributes (`goscope run` in Kubernetes).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        k8s: &'a BTreeMap<&'static str, String>,
    },
    /// A reported finding that no longer holds.
    Retraction {
        #[serde(flatten)]
        finding: &'a Finding,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        k8s: &'a BTreeMap<&'static str, String>,
    },
    /// The session's last line.
    Summary {
        pid: u32,
        events: u64,
        findings: u64,
        lost: u64,
        /// Events dropped in userspace (the processor's queue was full).
        dropped: u64,
        undecodable: u64,
        target_exited: bool,
        otlp: Option<&'a ExportStats>,
        /// Probe hits whose reads of the target's memory failed (their events were dropped), by
        /// probe program name.
        read_failures: BTreeMap<&'static str, u64>,
    },
    /// A goroutine event: its own `kind` (created, parked, ready, exited) is in the record.
    #[serde(untagged)]
    Event(&'a EventRecord),
}

/// How a process is watched (the `mode` of the `attached` and `mode` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// Every uprobe attached: the state follows the events.
    Probes,
    /// No uprobe: the state comes from periodic memory scans.
    Scan,
}

/// A probe as the `attached` line lists it.
#[derive(Debug, Serialize)]
pub struct AttachedProbe<'a> {
    pub name: &'static str,
    pub symbol: &'a str,
    pub offset: u64,
}

impl OutputLine<'_> {
    /// The line's JSON text. Events and findings keep their fields in declaration order (`kind`
    /// first); every other line has always had its keys sorted, and keeps that order byte for
    /// byte (serde_json's map is sorted without its `preserve_order` feature; a test guards it).
    pub fn to_json(&self) -> io::Result<String> {
        let text = match self {
            Self::Event(_) | Self::Finding { .. } | Self::Retraction { .. } => serde_json::to_string(self),
            _ => serde_json::to_value(self).map(|v| v.to_string()),
        };
        text.map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{FindingKey, FindingType, Grade};

    #[test]
    fn sorted_lines_keep_their_byte_order() {
        let probes = vec![AttachedProbe { name: "goroutine_parked", symbol: "runtime.gopark", offset: 4 }];
        let attached =
            OutputLine::Attached { pid: 7, go_version: "go1.26.0", mode: WatchMode::Probes, probes, k8s: BTreeMap::new() };
        assert_eq!(
            attached.to_json().unwrap(),
            r#"{"go_version":"go1.26.0","kind":"attached","mode":"probes","pid":7,"probes":[{"name":"goroutine_parked","offset":4,"symbol":"runtime.gopark"}]}"#
        );
        let warning = OutputLine::Warning { pid: Some(7), message: "no leak proof" };
        assert_eq!(warning.to_json().unwrap(), r#"{"kind":"warning","message":"no leak proof","pid":7}"#);
        let host_warning = OutputLine::Warning { pid: None, message: "cannot see" };
        assert_eq!(host_warning.to_json().unwrap(), r#"{"kind":"warning","message":"cannot see"}"#);
        let summary = OutputLine::Summary {
            pid: 7,
            events: 1,
            findings: 2,
            lost: 3,
            dropped: 4,
            undecodable: 5,
            target_exited: true,
            otlp: None,
            read_failures: BTreeMap::from([("goroutine_parked", 6), ("goroutine_ready", 0)]),
        };
        assert_eq!(
            summary.to_json().unwrap(),
            r#"{"dropped":4,"events":1,"findings":2,"kind":"summary","lost":3,"otlp":null,"pid":7,"read_failures":{"goroutine_parked":6,"goroutine_ready":0},"target_exited":true,"undecodable":5}"#
        );
    }

    #[test]
    fn findings_lead_with_their_kind() {
        let f = Finding {
            id: FindingKey::Blocked { pid: 7, goid: 9 },
            finding_type: FindingType::Blocked,
            grade: Grade::Suspect,
            pid: 7,
            goroutines: vec![],
            chain: vec![],
            summary: "s".into(),
        };
        assert_eq!(
            OutputLine::Retraction { finding: &f, k8s: &BTreeMap::new() }.to_json().unwrap(),
            r#"{"kind":"retraction","id":"blocked:7:9","type":"blocked","grade":"suspect","pid":7,"goroutines":[],"summary":"s"}"#
        );
        let k8s = BTreeMap::from([("k8s.pod.name", "api-1".to_owned()), ("k8s.namespace.name", "shop".to_owned())]);
        assert_eq!(
            OutputLine::Finding { finding: &f, k8s: &k8s }.to_json().unwrap(),
            r#"{"kind":"finding","id":"blocked:7:9","type":"blocked","grade":"suspect","pid":7,"goroutines":[],"summary":"s","k8s":{"k8s.namespace.name":"shop","k8s.pod.name":"api-1"}}"#
        );
    }
}
