//! Where findings and events go: JSON lines ([`json::OutputLine`], the README's table as a type),
//! readable text, the live `--top` screen, and OTLP.
//!
//! Reads the model and the detectors' findings; never feeds back into them.
pub mod dot;
pub mod dump;
pub mod event;
pub mod json;
pub mod otlp;
pub mod top;
pub mod trace;

use std::io::{self, Write};

pub use json::OutputLine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Writes `line` and a newline in one write, so lines from concurrent sessions (`goscope run`)
/// never interleave.
pub fn write_line(out: &mut impl Write, line: &str) -> io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    out.write_all(&buf)
}

/// The `warning` line: something goscope could not do, for process `pid` (None: not about one
/// process). In text, `goscope: ` then `text_subject` (e.g. `PID 42: `, where many processes share
/// the output) then the message.
pub fn warning_line(format: Format, pid: Option<u32>, message: &str, text_subject: &str) -> io::Result<String> {
    match format {
        Format::Json => OutputLine::Warning { pid, message }.to_json(),
        Format::Text => Ok(format!("goscope: {text_subject}{message}")),
    }
}
