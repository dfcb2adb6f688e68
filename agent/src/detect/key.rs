//! Finding identity: which situation a finding judges. Detectors that judge one situation at
//! different grades (a growing pile, then proof that it leaks) build the same key, so the proof
//! upgrades the suspect instead of being a second finding.
use std::{cmp::Ordering, fmt};

use serde::{Serialize, Serializer};

use crate::model::Location;

/// What a finding is about, stable across re-checks. Its text is the JSON `id`
/// (`blocked:PID:GOID`, `leak:PID:FUNCTION:LINE:REASON`, `deadlock:PID:G1-G2-…`,
/// `deadlock:PID:process`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FindingKey {
    /// One goroutine blocked past the threshold.
    Blocked { pid: u32, goid: u64 },
    /// Goroutines blocked at one site for one wait reason (`site` None: where is unknown).
    Leak { pid: u32, site: Option<(String, u32)>, reason: String },
    /// Goroutines waiting on each other, by goid in ascending order.
    Deadlock { pid: u32, goroutines: Vec<u64> },
    /// Every user goroutine of the process is stuck.
    WholeProcess { pid: u32 },
}

impl FindingKey {
    /// The key of a leak at `site` (function and line; the file adds nothing) for `reason`.
    pub fn leak(pid: u32, site: Option<&Location>, reason: &str) -> Self {
        Self::Leak { pid, site: site.map(|s| (s.function.clone(), s.line)), reason: reason.to_owned() }
    }
}

impl fmt::Display for FindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blocked { pid, goid } => write!(f, "blocked:{pid}:{goid}"),
            Self::Leak { pid, site: Some((function, line)), reason } => write!(f, "leak:{pid}:{function}:{line}:{reason}"),
            Self::Leak { pid, site: None, reason } => write!(f, "leak:{pid}::{reason}"),
            Self::Deadlock { pid, goroutines } => {
                write!(f, "deadlock:{pid}:")?;
                for (i, g) in goroutines.iter().enumerate() {
                    write!(f, "{}{g}", if i == 0 { "" } else { "-" })?;
                }
                Ok(())
            }
            Self::WholeProcess { pid } => write!(f, "deadlock:{pid}:process"),
        }
    }
}

/// Keys order as their text: the order in which one tick's findings are written.
impl Ord for FindingKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for FindingKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for FindingKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_the_json_ids() {
        assert_eq!(FindingKey::Blocked { pid: 1, goid: 9 }.to_string(), "blocked:1:9");
        let site = Location::new("main.compute", "/src/main.go", 54);
        assert_eq!(FindingKey::leak(1, Some(&site), "chan send").to_string(), "leak:1:main.compute:54:chan send");
        assert_eq!(FindingKey::leak(1, None, "select").to_string(), "leak:1::select");
        assert_eq!(FindingKey::Deadlock { pid: 1, goroutines: vec![5, 6] }.to_string(), "deadlock:1:5-6");
        assert_eq!(FindingKey::WholeProcess { pid: 1 }.to_string(), "deadlock:1:process");
    }

    #[test]
    fn keys_order_as_text() {
        let nine = FindingKey::Blocked { pid: 1, goid: 9 };
        let ten = FindingKey::Blocked { pid: 1, goid: 10 };
        assert!(ten < nine, "as the string ids always sorted");
    }
}
