//! Prints (or writes) an offsets table entry from binaries that carry DWARF:
//!
//! ```sh
//! cargo run -p goscope-inspect --example gen-offsets -- BIN...                 # to stdout
//! cargo run -p goscope-inspect --example gen-offsets -- --out-dir agent/inspect/offsets BIN...
//! ```
//! Each binary must be an unstripped Go binary; the file is named `go1.<minor>.txt`.

use std::path::PathBuf;
use std::process::ExitCode;

use goscope_inspect::{GoBinary, OffsetsSource, dwarf_entries, render_table};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut out_dir: Option<PathBuf> = None;
    let mut bins = Vec::new();
    while let Some(a) = args.next() {
        if a == "--out-dir" {
            out_dir = args.next().map(PathBuf::from);
        } else {
            bins.push(PathBuf::from(a));
        }
    }
    if bins.is_empty() {
        eprintln!("usage: gen-offsets [--out-dir DIR] BIN...");
        return ExitCode::from(2);
    }
    for bin in bins {
        let data = match std::fs::read(&bin) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{}: {e}", bin.display());
                return ExitCode::FAILURE;
            }
        };
        let go = match GoBinary::from_bytes(&data) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{}: {e}", bin.display());
                return ExitCode::FAILURE;
            }
        };
        let entries = match dwarf_entries(&data) {
            Ok(Some(e)) if go.offsets_source() == OffsetsSource::Dwarf => e,
            Ok(_) => {
                eprintln!("{}: no usable DWARF (build without -ldflags=-w)", bin.display());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("{}: {e}", bin.display());
                return ExitCode::FAILURE;
            }
        };
        if go.wait_reasons().source() != "binary" {
            eprintln!("{}: runtime.waitReasonStrings not found", bin.display());
            return ExitCode::FAILURE;
        }
        let v = &go.build_info().go_version;
        let text = render_table(&v.raw, &entries, go.wait_reasons().names());
        match &out_dir {
            Some(dir) => {
                let path = dir.join(format!("go{}.{}.txt", v.major, v.minor));
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("wrote {}", path.display());
            }
            None => print!("{text}"),
        }
    }
    ExitCode::SUCCESS
}
