//! Source sites: a function, file and line, as findings, events and the live summary name them.
use goscope_inspect::Frame;
use serde::Serialize;

/// A place in the target's source. Serialized as `{"function","file","line"}` in every JSON line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceSite {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl From<Frame> for SourceSite {
    fn from(f: Frame) -> Self {
        Self { function: f.function, file: f.file, line: f.line }
    }
}

/// An address as the output shows it: `0xc000012000`.
pub fn hex(addr: u64) -> String {
    format!("{addr:#x}")
}
