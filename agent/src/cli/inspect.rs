//! `goscope inspect`: everything goscope knows about a Go binary, and whether it can watch it.
use std::{io::Write as _, path::PathBuf};

use goscope_inspect::GoBinary;
use serde_json::json;

use crate::{cli::attach::AttachError, sink::Format, target::Target};

pub fn run(path: Option<PathBuf>, pid: Option<u32>, format: Format) -> Result<(), AttachError> {
    let (binary, shown_path) = match (path, pid) {
        (_, Some(pid)) => {
            let target = Target::from_pid(pid)?;
            let (binary, _) = target.inspect()?;
            (binary, target.exe_name)
        }
        (Some(path), None) => {
            let binary =
                GoBinary::open(&path).map_err(|source| AttachError::Binary { path: path.display().to_string(), source })?;
            (binary, path.display().to_string())
        }
        (None, None) => unreachable!("clap requires a path or --pid"),
    };
    let info = binary.build_info();
    let support = binary.support();
    let probes: Vec<_> = binary
        .probe_sites()
        .iter()
        .map(|s| {
            json!({"name": s.probe.program_name(), "symbol": s.symbol, "offset": s.offset,
                   "address": format!("{:#x}", s.address), "file_offset": format!("{:#x}", s.file_offset),
                   "instruction": s.instruction, "why": s.why})
        })
        .collect();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let doc = json!({
                "path": shown_path,
                "go_version": info.go_version.raw,
                "arch": binary.arch(),
                "stripped": binary.stripped(),
                "pie": binary.pie(),
                "cgo": info.cgo,
                "build_id": info.build_id,
                "module": info.module,
                "offsets": binary.layout().entries(),
                "offsets_source": binary.offsets_source(),
                "wait_reasons": (0..=u8::MAX).map_while(|c| binary.wait_reasons().name(c)).collect::<Vec<_>>(),
                "wait_reasons_source": binary.wait_reasons().source(),
                "probes": probes,
                "supported": support.supported,
                "unsupported_reasons": support.reasons,
            });
            writeln!(out, "{doc}")?;
        }
        Format::Text => {
            writeln!(out, "{shown_path}")?;
            writeln!(out, "  Go version   {}", info.go_version.raw)?;
            writeln!(out, "  arch         {:?}", binary.arch())?;
            writeln!(out, "  stripped     {}   PIE {}   cgo {}", binary.stripped(), binary.pie(), info.cgo)?;
            if let Some(id) = &info.build_id {
                writeln!(out, "  build id     {id}")?;
            }
            writeln!(out, "  offsets      from {:?}", binary.offsets_source())?;
            for (name, off) in binary.layout().entries() {
                writeln!(out, "    {name:<32} {off}")?;
            }
            writeln!(out, "  wait reasons {} (from the {})", binary.wait_reasons().len(), binary.wait_reasons().source())?;
            writeln!(out, "  probes")?;
            for s in binary.probe_sites() {
                writeln!(out, "    {:<18} {}+{} ({}) — {}", s.probe.program_name(), s.symbol, s.offset, s.instruction, s.why)?;
            }
            match support.supported {
                true => writeln!(out, "  supported    yes")?,
                false => writeln!(out, "  supported    NO: {}", support.reasons.join("; "))?,
            }
        }
    }
    Ok(())
}
