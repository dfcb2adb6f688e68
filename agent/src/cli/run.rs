//! `goscope run`: the node agent (a DaemonSet on cluster nodes, a systemd service on VMs). It
//! finds the Go processes on the host, attaches to each as `goscope attach` would, and keeps
//! looking: processes that start later are attached to, sessions of processes that exit end.
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
    task::JoinSet,
};

use crate::{
    cli::{
        K8sArgs,
        attach::{self, AttachError},
    },
    session::SessionConfig,
    sink::{Format, warning_line, write_line},
    target::ExecutableCache,
    target::k8s::{ApiConfig, K8sError, K8sLookup, PodCache},
    target::privilege::{self, Operation},
};

/// Which processes to watch.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Watch a process when its executable path or command name contains one of these (all Go
    /// processes when empty).
    pub include: Vec<String>,
    /// Never watch a process whose executable path or command name contains one of these.
    pub exclude: Vec<String>,
}

impl Selection {
    fn selects(&self, exe: &str, comm: &str) -> bool {
        let names = |patterns: &[String]| patterns.iter().any(|p| exe.contains(p.as_str()) || comm.contains(p.as_str()));
        (self.include.is_empty() || names(&self.include)) && !names(&self.exclude)
    }
}

pub struct RunOptions {
    pub selection: Selection,
    /// How often /proc is scanned for new processes.
    pub scan_every: Duration,
    /// Every per-process session's configuration; its `duration` (the run's, when set) is cut
    /// to what is left of the run when the session starts.
    pub session: SessionConfig,
}

/// An executable's identity: (device, inode, modification time). Decides "is it Go" once per
/// binary, however many processes run it.
type ExeId = (u64, u64, i64);

/// Runs until SIGINT/SIGTERM or the deadline, then lets every session finish its summary.
pub async fn run(opts: RunOptions) -> Result<(), AttachError> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let until = opts.session.duration.map(|d| Instant::now() + d);
    let deadline = tokio::time::sleep(opts.session.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut scan = tokio::time::interval(opts.scan_every);
    let mut is_go: HashMap<ExeId, bool> = HashMap::new();
    let mut watched: HashSet<u32> = HashSet::new();
    let mut sessions: JoinSet<(u32, Result<(), AttachError>)> = JoinSet::new();
    let own_pid = std::process::id();
    let mut warned_unreadable = false;
    let executables = Arc::new(ExecutableCache::default());
    // Tells every session to end, those still setting up included.
    let (shutdown, shutdown_seen) = watch::channel(false);
    loop {
        tokio::select! {
            _ = scan.tick() => {
                let found = candidates(&opts.selection, own_pid, &watched);
                if let Some(denied) = found.denied.filter(|_| !warned_unreadable) {
                    warned_unreadable = true;
                    warn_unreadable(&denied, opts.session.format)?;
                }
                for pid in found.pids {
                    let go = match exe_id(pid) {
                        Some(id) => *is_go.entry(id).or_insert_with(|| is_go_binary(pid)),
                        None => false,
                    };
                    if go {
                        watched.insert(pid);
                        // Sessions end with the run: at its deadline, or on the signal they see too.
                        let duration = until.map(|u| u.saturating_duration_since(Instant::now()));
                        let session = SessionConfig { duration, ..opts.session.clone() };
                        let executables = Arc::clone(&executables);
                        let shutdown = shutdown_seen.clone();
                        sessions.spawn(async move { (pid, attach::run_shared(pid, session, executables, shutdown).await) });
                    }
                }
            }
            Some(done) = sessions.join_next() => {
                if let Ok((pid, result)) = done {
                    watched.remove(&pid);
                    report_end(pid, result, opts.session.format)?;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut deadline => break,
        }
    }
    shutdown.send_replace(true);
    while let Some(done) = sessions.join_next().await {
        if let Ok((pid, result)) = done {
            report_end(pid, result, opts.session.format)?;
        }
    }
    Ok(())
}

/// What one look through /proc found.
struct Candidates {
    /// Processes not yet watched that the selection names.
    pids: Vec<u32>,
    /// Why the executable of some process could not be seen: the kernel refused for lack of
    /// privilege (other users' processes without CAP_SYS_PTRACE).
    denied: Option<String>,
}

/// Processes not yet watched that the selection names.
fn candidates(selection: &Selection, own_pid: u32, watched: &HashSet<u32>) -> Candidates {
    let mut found = Candidates { pids: Vec::new(), denied: None };
    let Ok(dir) = fs::read_dir("/proc") else { return found };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if pid == own_pid || watched.contains(&pid) {
            continue;
        }
        let exe = match fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) => exe.to_string_lossy().into_owned(),
            Err(e) => {
                // Kernel threads and zombies have no executable (ENOENT): not an error.
                if found.denied.is_none() && privilege::is_permission_denied(&e) {
                    found.denied =
                        Some(format!("PID {pid}: /proc/{pid}/exe: {e} ({})", privilege::hint(Operation::ReadProcess, &e)));
                }
                continue;
            }
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if selection.selects(&exe, comm.trim_end()) {
            found.pids.push(pid);
        }
    }
    found
}

/// The pod cache `run` names each process's pod and workload through, or none: outside a cluster
/// without `--k8s-api-server`, or with one warning when the API cannot be used (identity then
/// comes from cgroups and the target's environment only).
pub fn k8s_lookup(args: &K8sArgs, format: Format) -> Result<K8sLookup, AttachError> {
    let node_name = args.k8s_node_name.clone().filter(|n| !n.is_empty());
    let mut lookup = K8sLookup { pods: None, node_name: node_name.clone() };
    if args.no_k8s_api {
        return Ok(lookup);
    }
    let config = match &args.k8s_api_server {
        Some(server) => explicit_api_config(server, args, node_name).map(Some),
        None => ApiConfig::in_cluster(node_name),
    };
    match config.and_then(|c| c.map(PodCache::start).transpose()) {
        Ok(pods) => lookup.pods = pods,
        Err(e) => {
            let message = format!(
                "Kubernetes pod, container and workload names are not available ({e}); findings carry only the pod UID and \
                 container ID from cgroups and the target's downward-API variables"
            );
            write_line(&mut std::io::stdout(), &warning_line(format, None, &message, "")?)?;
        }
    }
    Ok(lookup)
}

fn explicit_api_config(server: &str, args: &K8sArgs, node_name: Option<String>) -> Result<ApiConfig, K8sError> {
    let read = |path: &std::path::Path| {
        fs::read(path).map_err(|source| K8sError::Credentials { path: path.display().to_string(), source })
    };
    Ok(ApiConfig {
        server: server.trim_end_matches('/').to_owned(),
        token: args.k8s_token_file.as_deref().map(read).transpose()?.map(|t| String::from_utf8_lossy(&t).trim().to_owned()),
        ca_pem: args.k8s_ca_file.as_deref().map(read).transpose()?,
        node_name,
    })
}

/// One warning per run that some processes cannot be watched for lack of privilege.
fn warn_unreadable(denied: &str, format: Format) -> Result<(), AttachError> {
    let message = format!("cannot see which program some processes run, so they are not watched: {denied}");
    let line = warning_line(format, None, &message, "")?;
    write_line(&mut std::io::stdout(), &line)?;
    Ok(())
}

fn exe_id(pid: u32) -> Option<ExeId> {
    let m = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((m.dev(), m.ino(), m.mtime()))
}

/// Whether the process runs a Go program, from its executable's build info alone (read through
/// `/proc/PID/exe`, so it works for processes in other mount namespaces; attach checks the rest).
fn is_go_binary(pid: u32) -> bool {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
    goscope_memory::MappedFile::open(&path).is_ok_and(|file| goscope_inspect::is_go_binary(file.as_ref()))
}

/// One line saying a session ended and why, unless it ended the ordinary way.
fn report_end(pid: u32, result: Result<(), AttachError>, format: Format) -> Result<(), AttachError> {
    let Err(e) = result else { return Ok(()) };
    let line = warning_line(format, Some(pid), &e.to_string(), &format!("PID {pid}: "))?;
    write_line(&mut std::io::stdout(), &line)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_path_or_command_name() {
        let all = Selection::default();
        assert!(all.selects("/usr/bin/anything", "anything"));
        let some = Selection { include: vec!["api".into(), "worker".into()], exclude: vec!["debug".into()] };
        assert!(some.selects("/srv/api-server", "api-server"));
        assert!(some.selects("/app/main", "worker"));
        assert!(!some.selects("/app/main", "main"));
        assert!(!some.selects("/srv/api-debug", "api-debug"));
    }
}
