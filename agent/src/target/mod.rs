//! A target process: its PID, the binary it runs (through `/proc/PID/exe`, so the right inode is
//! found whatever mount namespace the process lives in) and the load bias of that binary; the
//! analysed binary as every later stage sees it ([`TargetContext`]); and the eBPF probes that
//! watch it ([`probes`]); and where it runs in Kubernetes ([`k8s`]).
pub mod k8s;
pub mod privilege;
pub mod probes;

use std::{
    collections::HashMap,
    fs,
    io::{self, BufRead as _},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use goscope_inspect::{FileBytes, GoBinary, Location};
use goscope_memory::MappedFile;
use object::{Object as _, ObjectSegment as _};

use crate::target::privilege::{Operation, hint};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with PID {0} (check the PID; the process may have exited)")]
    NoSuchProcess(u32),
    #[error("PID {pid} exited while goscope was attaching")]
    Exited { pid: u32 },
    #[error("cannot read /proc/{pid}/{what}: {source} ({hint})")]
    Proc { pid: u32, what: &'static str, source: io::Error, hint: String },
    #[error("PID {pid}: cannot find where {exe} is mapped in /proc/{pid}/maps")]
    NotMapped { pid: u32, exe: String },
    #[error("PID {pid} has no readable executable (a kernel thread or a zombie?)")]
    NoExecutable { pid: u32 },
    #[error("reading {path}: {source} ({hint})")]
    ReadExe { path: String, source: io::Error, hint: String },
    #[error("PID {pid} ({exe}): {source}")]
    Inspect {
        pid: u32,
        exe: String,
        #[source]
        source: goscope_inspect::InspectError,
    },
}

/// What every stage after attach needs to know about one target: its analysed binary and where
/// it is loaded, to symbolize addresses and name wait reasons.
pub struct TargetContext {
    pub pid: u32,
    /// Shared by the targets of one executable ([`ExecutableCache`]).
    pub binary: Arc<GoBinary>,
    /// Runtime minus link-time address of the executable (PIE).
    pub load_bias: u64,
    /// CLOCK_MONOTONIC ns at attach, for relative times in text output.
    pub attached_at_ns: u64,
}

impl TargetContext {
    pub fn symbolize(&self, runtime_pc: u64) -> Option<Location> {
        self.binary.symbolize(runtime_pc.wrapping_sub(self.load_bias))
    }

    pub fn wait_reason(&self, code: u8) -> String {
        self.binary.wait_reasons().name(code).map_or_else(|| format!("wait reason {code}"), str::to_owned)
    }

    /// gopark's lock argument is `&hchan.lock` for blocking channel operations only.
    pub fn channel(&self, reason: &str, lock_addr: u64) -> Option<u64> {
        let chan_op = (reason.starts_with("chan send") || reason.starts_with("chan receive")) && !reason.contains("nil chan");
        let lock_off = u64::from(self.binary.layout().hchan_lock);
        (chan_op && lock_addr > lock_off).then(|| lock_addr - lock_off)
    }
}

/// An executable's identity: (device, inode, modification time).
type ExecutableId = (u64, u64, i64);

/// Analysed executables, shared by the targets that run the same one: `goscope run` watching
/// many processes of one server analyses it once and holds its tables once. Entries are weak:
/// an executable goes with the last session of a process running it. Each executable has a lock
/// of its own, held while it is analysed: analyses of different executables run at once.
#[derive(Default)]
pub struct ExecutableCache(Mutex<HashMap<ExecutableId, AnalysisSlot>>);

/// One executable's analysed binary, if a session still holds it; locked while it is analysed.
type AnalysisSlot = Arc<Mutex<Weak<GoBinary>>>;

impl ExecutableCache {
    /// The slot of executable `id` (a new one when unknown). Drops the slots of executables no
    /// session holds and nobody is analysing.
    fn slot(&self, id: ExecutableId) -> AnalysisSlot {
        let mut slots = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A slot being analysed is locked (kept); try_lock never waits for an analysis here.
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |b| b.strong_count() > 0));
        Arc::clone(slots.entry(id).or_default())
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    /// `/proc/PID/exe`: opens and probes the process's own executable inode.
    pub exe: PathBuf,
    /// What `/proc/PID/exe` points to, for display.
    pub exe_name: String,
}

impl Target {
    pub fn from_pid(pid: u32) -> Result<Self, TargetError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(TargetError::NoSuchProcess(pid));
        }
        let exe = proc_dir.join("exe");
        let exe_name = fs::read_link(&exe).map_err(|source| proc_error(pid, "exe", source))?.to_string_lossy().into_owned();
        Ok(Self { pid, exe, exe_name })
    }

    /// True while the process exists and is not a zombie. (A PID reused by a new process would
    /// also count; the window is too small to matter for an attach.)
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        // The state letter follows the command name, which is in parentheses and may contain any.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z" | "X"))
    }

    /// [`Target::inspect`], or the binary another target of the same executable analysed (same
    /// device, inode and modification time), still in `executables`.
    pub fn inspect_shared(&self, executables: &ExecutableCache) -> Result<(Arc<GoBinary>, u64), TargetError> {
        let Ok(meta) = fs::metadata(&self.exe) else {
            // Exited or unreadable: inspect says which.
            return self.inspect().map(|(binary, bias)| (Arc::new(binary), bias));
        };
        let id = (meta.dev(), meta.ino(), meta.mtime());
        let slot = executables.slot(id);
        // Held while analysing: a second process of this executable waits for this analysis
        // rather than doing its own (other executables' analyses go on meanwhile).
        let mut shared = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(binary) = shared.upgrade() {
            log::debug!("PID {}: {} is already analysed (shared with the other targets it runs in)", self.pid, self.exe_name);
            let bias = self.load_bias(binary.file())?;
            return Ok((binary, bias));
        }
        let (binary, bias) = self.inspect()?;
        let binary = Arc::new(binary);
        *shared = Arc::downgrade(&binary);
        Ok((binary, bias))
    }

    /// Maps and analyses the executable: the binary and its load bias. The binary keeps the
    /// mapping, of which only the pages its lookups touch stay resident.
    pub fn inspect(&self) -> Result<(GoBinary, u64), TargetError> {
        log::debug!("PID {}: analysing {}", self.pid, self.exe_name);
        let inspect_err = |source| TargetError::Inspect { pid: self.pid, exe: self.exe_name.clone(), source };
        let mapped = Arc::new(self.map_exe()?);
        let analysed = GoBinary::from_file(Arc::clone(&mapped) as FileBytes).map_err(inspect_err);
        let bias = analysed.is_ok().then(|| self.load_bias((*mapped).as_ref())).transpose();
        // The analysis read most of the file and allocated (and freed) much more than the
        // binary keeps: hand both back.
        mapped.release_resident();
        goscope_memory::release_free_heap();
        Ok((analysed?, bias?.unwrap_or(0)))
    }

    /// Maps `/proc/PID/exe`. It is briefly unreadable while a process execs, and for good once
    /// it exits: retry a few times before deciding which.
    fn map_exe(&self) -> Result<MappedFile, TargetError> {
        let mut tries = 0;
        loop {
            match MappedFile::open(&self.exe) {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 5 && self.is_alive() => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(if self.is_alive() {
                        TargetError::NoExecutable { pid: self.pid }
                    } else {
                        TargetError::Exited { pid: self.pid }
                    });
                }
                Err(source) => {
                    let hint = hint(Operation::ReadProcess, &source);
                    return Err(TargetError::ReadExe { path: self.exe.display().to_string(), source, hint });
                }
            }
        }
    }

    /// Runtime address minus link-time address of the executable's code (non-zero for PIE).
    pub fn load_bias(&self, elf: &[u8]) -> Result<u64, TargetError> {
        let pid = self.pid;
        let file = object::File::parse(elf).map_err(|e| TargetError::Proc {
            pid,
            what: "exe",
            source: io::Error::new(io::ErrorKind::InvalidData, e),
            hint: "not an ELF file".to_owned(),
        })?;
        if file.kind() != object::ObjectKind::Dynamic {
            return Ok(0);
        }
        let maps = fs::File::open(format!("/proc/{pid}/maps")).map_err(|source| proc_error(pid, "maps", source))?;
        for line in io::BufReader::new(maps).lines() {
            let line = line.map_err(|source| proc_error(pid, "maps", source))?;
            let Some(mapping) = Mapping::parse(&line) else {
                continue;
            };
            if mapping.path != self.exe_name {
                continue;
            }
            // The segment whose file range holds this mapping's file offset gives its link address.
            for seg in file.segments() {
                let (seg_off, seg_size) = seg.file_range();
                if mapping.offset >= seg_off && mapping.offset < seg_off + seg_size.max(1) {
                    let vaddr = seg.address() + (mapping.offset - seg_off);
                    return Ok(mapping.start.wrapping_sub(vaddr));
                }
            }
        }
        Err(TargetError::NotMapped { pid, exe: self.exe_name.clone() })
    }
}

fn proc_error(pid: u32, what: &'static str, source: io::Error) -> TargetError {
    match source.kind() {
        io::ErrorKind::NotFound => TargetError::Exited { pid },
        _ => TargetError::Proc { pid, what, hint: hint(Operation::ReadProcess, &source), source },
    }
}

struct Mapping<'a> {
    start: u64,
    offset: u64,
    path: &'a str,
}

impl<'a> Mapping<'a> {
    /// `start-end perms offset dev inode path`. The path is the rest of the line, as the kernel
    /// prints it: it may contain spaces, and ends in ` (deleted)` once the file was unlinked (a
    /// binary replaced on disk, or removed from a container's filesystem), exactly like
    /// readlink(/proc/PID/exe), so the two still compare equal.
    fn parse(line: &'a str) -> Option<Self> {
        let mut rest = line;
        let mut field = || {
            let t = rest.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            rest = &t[end..];
            Some(&t[..end]).filter(|f| !f.is_empty())
        };
        let range = field()?;
        let _perms = field()?;
        let offset = u64::from_str_radix(field()?, 16).ok()?;
        let _dev = field()?;
        let _inode = field()?;
        let path = rest.trim_start();
        if path.is_empty() {
            return None;
        }
        let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
        Some(Self { start, offset, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_line() {
        let m = Mapping::parse("7f1c2a000000-7f1c2a200000 r-xp 00001000 fd:01 1234   /usr/bin/demo").unwrap();
        assert_eq!(m.start, 0x7f1c2a000000);
        assert_eq!(m.offset, 0x1000);
        assert_eq!(m.path, "/usr/bin/demo");
        assert!(Mapping::parse("garbage").is_none());
        assert!(Mapping::parse("7f1c2a000000-7f1c2a200000 rw-p 00000000 00:00 0 ").is_none());
        let deleted = "55d0c0a00000-55d0c0ac6000 r-xp 00000000 00:28 3                          /mnt/app/my svc (deleted)";
        assert_eq!(Mapping::parse(deleted).unwrap().path, "/mnt/app/my svc (deleted)");
    }

    #[test]
    fn an_executable_being_analysed_never_holds_up_another() {
        let cache = ExecutableCache::default();
        let first = cache.slot((1, 1, 0));
        let analysing = first.lock().unwrap();
        // Another executable's slot comes at once, though the first is locked by its analysis.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| sender.send(cache.slot((1, 2, 0))).unwrap());
            assert!(receiver.recv_timeout(Duration::from_secs(5)).is_ok(), "the second executable waited for the first");
        });
        // The same executable shares the slot (its analysis is waited for, not repeated) and the
        // slot being analysed is kept while no binary is in it yet.
        assert!(Arc::ptr_eq(&first, &cache.slot((1, 1, 0))));
        drop(analysing);
        // Analysed, then the last session let the binary go: the slot goes too.
        drop(first);
        cache.slot((1, 3, 0));
        let slots = cache.0.lock().unwrap();
        assert!(!slots.contains_key(&(1, 1, 0)) && slots.contains_key(&(1, 3, 0)), "{:?}", slots.keys().collect::<Vec<_>>());
    }

    #[test]
    fn liveness_follows_the_process() {
        let me = Target::from_pid(std::process::id()).unwrap();
        assert!(me.is_alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie is not alive.
        while fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let zombie = Target { pid, exe: PathBuf::new(), exe_name: String::new() };
        assert!(!zombie.is_alive());
        child.wait().unwrap();
    }

    #[test]
    fn missing_pid_is_a_clear_error() {
        let err = Target::from_pid(u32::MAX).unwrap_err();
        assert!(err.to_string().contains("no process with PID"));
    }
}
