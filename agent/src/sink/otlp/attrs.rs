//! Attribute keys and the exported resource. OpenTelemetry semantic-convention keys come from
//! `opentelemetry-semantic-conventions` (so a rename there shows up here at compile time); the
//! rest live under one `goscope.` namespace. `docs/otlp.md` documents every one of them.
use std::{fs, path::Path};

use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    Resource,
    resource::{EnvResourceDetector, TelemetryResourceDetector},
};
use opentelemetry_semantic_conventions::{SCHEMA_URL, attribute as sc};

pub use sc::{CODE_FILE_PATH, CODE_FUNCTION_NAME, CODE_LINE_NUMBER};
/// The same facts under their semantic-convention names before 1.30 (deprecated; the crate only
/// has them as experimental): backends and dashboards built on those still query them.
pub const CODE_FUNCTION_LEGACY: &str = "code.function";
pub const CODE_FILEPATH_LEGACY: &str = "code.filepath";
pub const CODE_LINENO_LEGACY: &str = "code.lineno";

// Goroutines.
pub const GOROUTINE_ID: &str = "goscope.goroutine.id";
pub const GOROUTINE_PARENT_ID: &str = "goscope.goroutine.parent.id";
pub const GOROUTINE_START_FUNCTION: &str = "goscope.goroutine.start_function";
pub const GOROUTINE_CREATION_FUNCTION: &str = "goscope.goroutine.creation.function";
pub const GOROUTINE_CREATION_FILE: &str = "goscope.goroutine.creation.file";
pub const GOROUTINE_CREATION_LINE: &str = "goscope.goroutine.creation.line";
pub const GOROUTINE_CREATED_BEFORE_ATTACH: &str = "goscope.goroutine.created_before_attach";
pub const GOROUTINE_STATE: &str = "goscope.goroutine.state";

// Waits.
pub const WAIT_REASON: &str = "goscope.wait.reason";
pub const WAIT_REASON_CODE: &str = "goscope.wait.reason_code";
pub const WAIT_CLASS: &str = "goscope.wait.class";
pub const CHANNEL_ADDRESS: &str = "goscope.channel.address";
pub const CHANNEL_ADDRESSES: &str = "goscope.channel.addresses";
pub const CHANNEL_CAPACITY: &str = "goscope.channel.capacity";
pub const CHANNEL_CLOSED: &str = "goscope.channel.closed";
pub const CHANNEL_ELEMENT_TYPE: &str = "goscope.channel.element_type";
pub const LOCK_ADDRESS: &str = "goscope.lock.address";
pub const WAKER_GOROUTINE_ID: &str = "goscope.waker.goroutine.id";
pub const WAKER_KIND: &str = "goscope.waker.kind";
pub const BLOCKING_DURATION_NS: &str = "goscope.blocking.duration_ns";
pub const BLOCKING_ONGOING: &str = "goscope.blocking.ongoing";
pub const BLOCKING_SINCE_IS_LOWER_BOUND: &str = "goscope.blocking.since_is_lower_bound";

// Findings.
pub const FINDING_ID: &str = "goscope.finding.id";
pub const FINDING_TYPE: &str = "goscope.finding.type";
pub const FINDING_GRADE: &str = "goscope.finding.grade";
pub const FINDING_SUMMARY: &str = "goscope.finding.summary";
pub const FINDING_RETRACTED: &str = "goscope.finding.retracted";
pub const FINDING_GOROUTINE_IDS: &str = "goscope.finding.goroutine.ids";
pub const FINDING_CHAIN: &str = "goscope.finding.chain";
pub const FINDING_CHAIN_POSITION: &str = "goscope.finding.chain.position";
pub const FINDING_WAIT_REASONS: &str = "goscope.finding.wait.reasons";
pub const FINDING_CHANNELS: &str = "goscope.finding.channel.addresses";
pub const FINDING_LOCKS: &str = "goscope.finding.lock.addresses";
pub const FINDING_MAX_WAIT_NS: &str = "goscope.finding.max_waiting_for_ns";

// goscope's own health.
pub const PROBE_NAME: &str = "goscope.probe.name";
pub const PROBE_MODE: &str = "goscope.probe.mode";
pub const OTLP_SIGNAL: &str = "goscope.otlp.signal";

/// Resource attributes from the k8s downward API, when the target runs in Kubernetes
/// (`KUBERNETES_SERVICE_HOST` set): (env var, semantic-convention key).
const K8S_ENV: &[(&str, &str)] = &[
    ("POD_NAME", sc::K8S_POD_NAME),
    ("POD_NAMESPACE", sc::K8S_NAMESPACE_NAME),
    ("POD_UID", sc::K8S_POD_UID),
    ("NODE_NAME", sc::K8S_NODE_NAME),
    ("CONTAINER_NAME", sc::K8S_CONTAINER_NAME),
];

/// The target process, as the exported resource describes it.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent_pid: Option<u32>,
    /// What `/proc/PID/exe` points to.
    pub executable_path: String,
    pub command_args: Vec<String>,
    /// `go1.22.3` as stored in the binary.
    pub go_version: String,
    /// Go build ID (`.note.go.buildid`).
    pub go_build_id: Option<String>,
    /// Main module path (`mod` line of the build info).
    pub go_module: Option<String>,
    /// Environment of the target (read from `/proc/PID/environ`), only the variables goscope uses.
    pub k8s: Vec<(&'static str, String)>,
    pub container_id: Option<String>,
}

impl ProcessInfo {
    /// Gathers what `/proc/PID` tells (best effort: unreadable files leave fields empty).
    pub fn from_pid(pid: u32, executable_path: &str, binary: &goscope_inspect::GoBinary) -> Self {
        let proc_dir = format!("/proc/{pid}");
        let command_args = fs::read(format!("{proc_dir}/cmdline"))
            .map(|b| b.split(|&c| c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
            .unwrap_or_default();
        let parent_pid = fs::read_to_string(format!("{proc_dir}/stat")).ok().and_then(|s| {
            // pid (comm) state ppid ...; comm may contain spaces and parentheses.
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().nth(1)?.parse().ok()
        });
        let environ = fs::read(format!("{proc_dir}/environ")).ok();
        let target_env = |name: &str| -> Option<String> {
            match &environ {
                Some(env) => env.split(|&c| c == 0).find_map(|kv| {
                    let kv = std::str::from_utf8(kv).ok()?;
                    let (k, v) = kv.split_once('=')?;
                    (k == name && !v.is_empty()).then(|| v.to_owned())
                }),
                // Unreadable: goscope most likely runs beside the target (a sidecar); its own
                // environment describes the same pod.
                None => std::env::var(name).ok().filter(|v| !v.is_empty()),
            }
        };
        let k8s = if target_env("KUBERNETES_SERVICE_HOST").is_some() {
            K8S_ENV.iter().filter_map(|(var, key)| Some((*key, target_env(var)?))).collect()
        } else {
            Vec::new()
        };
        let container_id = fs::read_to_string(format!("{proc_dir}/cgroup")).ok().and_then(|c| container_id_from_cgroup(&c));
        let info = binary.build_info();
        Self {
            pid,
            parent_pid,
            executable_path: executable_path.to_owned(),
            command_args,
            go_version: info.go_version.raw.clone(),
            go_build_id: info.build_id.clone(),
            go_module: (!info.module.is_empty()).then(|| info.module.clone()),
            k8s,
            container_id,
        }
    }

    pub fn executable_name(&self) -> &str {
        Path::new(&self.executable_path)
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(" (deleted)"))
            .unwrap_or(&self.executable_path)
    }

    fn attributes(&self) -> Vec<KeyValue> {
        let mut kv = vec![
            KeyValue::new(sc::PROCESS_PID, i64::from(self.pid)),
            KeyValue::new(sc::PROCESS_EXECUTABLE_PATH, self.executable_path.clone()),
            KeyValue::new(sc::PROCESS_EXECUTABLE_NAME, self.executable_name().to_owned()),
            KeyValue::new(sc::PROCESS_RUNTIME_NAME, "go"),
            KeyValue::new(sc::PROCESS_RUNTIME_VERSION, self.go_version.trim_start_matches("go").to_owned()),
            KeyValue::new(sc::HOST_ARCH, host_arch()),
            KeyValue::new(sc::OS_TYPE, "linux"),
        ];
        if let Some(ppid) = self.parent_pid {
            kv.push(KeyValue::new(sc::PROCESS_PARENT_PID, i64::from(ppid)));
        }
        if !self.command_args.is_empty() {
            let args: Vec<opentelemetry::StringValue> = self.command_args.iter().cloned().map(Into::into).collect();
            kv.push(KeyValue::new(sc::PROCESS_COMMAND_ARGS, opentelemetry::Value::Array(args.into())));
        }
        if let Some(id) = &self.go_build_id {
            kv.push(KeyValue::new(sc::PROCESS_EXECUTABLE_BUILD_ID_GO, id.clone()));
        }
        if let Some(m) = &self.go_module {
            kv.push(KeyValue::new("goscope.go.module", m.clone()));
        }
        if let Some(host) = hostname() {
            kv.push(KeyValue::new(sc::HOST_NAME, host));
        }
        if let Some(id) = &self.container_id {
            kv.push(KeyValue::new(sc::CONTAINER_ID, id.clone()));
        }
        kv.extend(self.k8s.iter().map(|(k, v)| KeyValue::new(*k, v.clone())));
        kv
    }
}

/// The resource: the watched process (process.*, host.*, container.id, k8s.*), service.name
/// defaulting to its executable name; `OTEL_RESOURCE_ATTRIBUTES` overrides these, and
/// `--otlp-service-name` / `OTEL_SERVICE_NAME` (passed as `service_name`) overrides all.
pub fn resource(info: &ProcessInfo, service_name: Option<&str>) -> Resource {
    let mut attrs = info.attributes();
    attrs.push(KeyValue::new(sc::SERVICE_NAME, info.executable_name().to_owned()));
    let mut b = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_schema_url(attrs, SCHEMA_URL)
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = service_name {
        b = b.with_service_name(name.to_owned());
    }
    b.build()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn hostname() -> Option<String> {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_owned())
}

/// The 64-hex-digit container ID in a cgroup path (docker, containerd, cri-o, podman layouts).
fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(|seg| {
            let seg = seg.trim_end_matches(".scope");
            let id = seg.rsplit(['-', ':']).next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(container_id_from_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")), Some(id.clone()));
        assert_eq!(container_id_from_cgroup(&format!("0::/kubepods/besteffort/pod1234/cri-containerd:{id}\n")), Some(id.clone()));
        assert_eq!(container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"), None);
    }

    #[test]
    fn resource_names_the_target_and_env_overrides_service_name() {
        let info = ProcessInfo {
            pid: 42,
            executable_path: "/srv/bin/shop (deleted)".into(),
            go_version: "go1.22.3".into(),
            ..ProcessInfo::default()
        };
        let r = resource(&info, None);
        let get = |k: &str| r.get(&opentelemetry::Key::from(k.to_owned())).map(|v| v.to_string());
        assert_eq!(get("service.name").as_deref(), Some("shop"));
        assert_eq!(get("process.pid").as_deref(), Some("42"));
        assert_eq!(get("process.runtime.version").as_deref(), Some("1.22.3"));
        let r = resource(&info, Some("checkout"));
        assert_eq!(r.get(&opentelemetry::Key::from("service.name")).map(|v| v.to_string()).as_deref(), Some("checkout"));
    }
}
