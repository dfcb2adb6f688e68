//! `goscope dump`: every goroutine of a running process, read from its memory without stopping
//! it (the output is `sink::dump`'s).
use std::io::{self, Write as _};

use goscope_memory::{ProcessMemory, SnapshotError, snapshot};

use crate::{
    cli::attach::AttachError,
    sink::{self, Format},
    target::Target,
};

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("PID {pid} exited while goscope was reading its memory")]
    Exited { pid: u32 },
    #[error("PID {pid} ({exe}): {source}")]
    Snapshot {
        pid: u32,
        exe: String,
        #[source]
        source: SnapshotError,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

pub fn run(pid: u32, format: Format) -> Result<(), DumpError> {
    let target = Target::from_pid(pid).map_err(AttachError::from)?;
    let (binary, load_bias) = target.inspect().map_err(AttachError::from)?;
    let gone = |target: &Target| DumpError::Exited { pid: target.pid };
    let mem = match ProcessMemory::new(pid) {
        Ok(m) => m,
        Err(e) if e.is_gone() => return Err(gone(&target)),
        Err(e) => {
            return Err(DumpError::Snapshot { pid, exe: target.exe_name.clone(), source: e.into() });
        }
    };
    let snap = snapshot(&mem, &binary, load_bias).map_err(|source| {
        let exited = match &source {
            SnapshotError::Memory(e) => e.is_gone(),
            SnapshotError::Locate(goscope_memory::LocateError::Memory(e)) => e.is_gone(),
            _ => false,
        };
        // A process that exits mid-read can also surface as unmapped memory.
        if exited || mem.process_gone() {
            gone(&target)
        } else {
            DumpError::Snapshot { pid, exe: target.exe_name.clone(), source }
        }
    })?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let go_version = &binary.build_info().go_version.raw;
    let written = sink::dump::write(&mut out, &snap, format, &target.exe_name, go_version).and_then(|()| out.flush());
    match written {
        // `goscope dump | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(DumpError::from),
    }
}
