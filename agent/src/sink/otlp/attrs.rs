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

use crate::target::k8s::CgroupIdentity;

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
/// How the target is watched (`probes`, `no_semaphore`, `scan`).
pub const MODE: &str = "goscope.mode";
pub const MODE_REASON: &str = "goscope.mode.reason";
pub const MODE_ESTIMATED_COST_PCT: &str = "goscope.mode.estimated_cost_pct";
pub const MODE_BUDGET_PCT: &str = "goscope.mode.budget_pct";
pub const PROBES_ATTACHED: &str = "goscope.probes.attached";

/// Resource attributes from the k8s downward API, when the target runs in Kubernetes: (variable
/// in the target's environment, semantic-convention key). These are the only variables goscope
/// looks up; nothing else of the environment is kept or exported.
const K8S_ENV: &[(&str, &str)] = &[
    ("POD_NAME", sc::K8S_POD_NAME),
    ("POD_NAMESPACE", sc::K8S_NAMESPACE_NAME),
    ("POD_UID", sc::K8S_POD_UID),
    ("NODE_NAME", sc::K8S_NODE_NAME),
    ("CONTAINER_NAME", sc::K8S_CONTAINER_NAME),
];

/// goscope's own variable naming its node (the DaemonSet sets it from `spec.nodeName`): the node
/// of every pod it watches. goscope's own pod is not the target's, so nothing else is taken from
/// goscope's environment.
const OWN_NODE_NAME_ENV: &str = "K8S_NODE_NAME";

/// The target process, as the exported resource describes it.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent_pid: Option<u32>,
    /// What `/proc/PID/exe` points to.
    pub executable_path: String,
    /// `/proc/PID/cmdline`, only with `--otlp-command-args`: command lines often carry secrets.
    pub command_args: Vec<String>,
    /// `go1.22.3` as stored in the binary.
    pub go_version: String,
    /// Go build ID (`.note.go.buildid`).
    pub go_build_id: Option<String>,
    /// Main module path (`mod` line of the build info).
    pub go_module: Option<String>,
    /// k8s.* attributes: the target's downward-API variables, its pod UID from its cgroup.
    pub k8s: Vec<(&'static str, String)>,
    pub container_id: Option<String>,
}

impl ProcessInfo {
    /// Gathers what `/proc/PID` tells (best effort: unreadable files leave fields empty). The
    /// command line is read only when `with_command_args`.
    pub fn from_pid(pid: u32, executable_path: &str, binary: &goscope_inspect::GoBinary, with_command_args: bool) -> Self {
        let proc_dir = format!("/proc/{pid}");
        let command_args = if with_command_args {
            fs::read(format!("{proc_dir}/cmdline"))
                .map(|b| {
                    b.split(|&c| c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let parent_pid = fs::read_to_string(format!("{proc_dir}/stat")).ok().and_then(|s| {
            // pid (comm) state ppid ...; comm may contain spaces and parentheses.
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().nth(1)?.parse().ok()
        });
        let cgroup = fs::read_to_string(format!("{proc_dir}/cgroup")).unwrap_or_default();
        let environ = fs::read(format!("{proc_dir}/environ")).unwrap_or_default();
        let own_node = std::env::var(OWN_NODE_NAME_ENV).ok().filter(|v| !v.is_empty());
        let k8s = k8s_attributes(&environ, &cgroup, own_node);
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
            container_id: container_id_from_cgroup(&cgroup),
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
        let host = hostname();
        kv.push(KeyValue::new(sc::SERVICE_INSTANCE_ID, service_instance_id(host.as_deref(), self.pid)));
        if let Some(host) = host {
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

/// `service.instance.id`: the host and the PID, unique among the processes that share a
/// `service.name` (one executable run twice on a node, a workload's pods on many nodes). Metric
/// backends key series by it: Prometheus's OTLP receiver makes it the `instance` label, and without
/// it two such processes would write to the same series.
fn service_instance_id(host: Option<&str>, pid: u32) -> String {
    match host {
        Some(host) => format!("{host}:{pid}"),
        None => pid.to_string(),
    }
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

/// The value of `name` in a `/proc/PID/environ` image (NUL-separated `KEY=VALUE`), if not empty.
fn environ_var(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|&c| c == 0).find_map(|kv| {
        let value = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        let value = std::str::from_utf8(value).ok()?;
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The k8s.* attributes of a target whose environment is `environ` and cgroup file `cgroup`:
/// none unless it runs in a pod (its cgroup names one, or its environment has
/// `KUBERNETES_SERVICE_HOST`).
fn k8s_attributes(environ: &[u8], cgroup: &str, own_node: Option<String>) -> Vec<(&'static str, String)> {
    let pod_uid = pod_uid_from_cgroup(cgroup);
    if pod_uid.is_none() && environ_var(environ, "KUBERNETES_SERVICE_HOST").is_none() {
        return Vec::new();
    }
    let mut attrs: Vec<(&'static str, String)> =
        K8S_ENV.iter().filter_map(|(var, key)| Some((*key, environ_var(environ, var)?))).collect();
    let mut add_missing = |key: &'static str, value: Option<String>| {
        if let Some(value) = value
            && !attrs.iter().any(|(k, _)| *k == key)
        {
            attrs.push((key, value));
        }
    };
    add_missing(sc::K8S_POD_UID, pod_uid);
    add_missing(sc::K8S_NODE_NAME, own_node);
    attrs
}

fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    CgroupIdentity::from_proc_cgroup(cgroup).pod_uid
}

fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    CgroupIdentity::from_proc_cgroup(cgroup).container_id
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
    fn pod_uids_from_kubelet_cgroup_paths() {
        let uid = "1a2b3c4d-0000-4e5f-8a9b-0123456789ab";
        let id = "b".repeat(64);
        let cgroupfs = format!("0::/kubepods/burstable/pod{uid}/{id}\n");
        assert_eq!(pod_uid_from_cgroup(&cgroupfs).as_deref(), Some(uid));
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope\n",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid_from_cgroup(&systemd).as_deref(), Some(uid));
        let guaranteed = format!("0::/kubepods.slice/kubepods-pod{}.slice/crio-{id}.scope\n", uid.replace('-', "_"));
        assert_eq!(pod_uid_from_cgroup(&guaranteed).as_deref(), Some(uid));
        assert_eq!(pod_uid_from_cgroup("0::/system.slice/docker-abc.scope\n"), None);
    }

    #[test]
    fn k8s_attributes_come_only_from_the_named_variables() {
        let environ =
            b"PATH=/bin\0DB_PASSWORD=hunter2\0KUBERNETES_SERVICE_HOST=10.0.0.1\0POD_NAME=shop-7d9\0POD_NAMESPACE=prod\0";
        let attrs = k8s_attributes(environ, "0::/\n", Some("node-a".into()));
        assert_eq!(
            attrs,
            [
                (sc::K8S_POD_NAME, "shop-7d9".to_owned()),
                (sc::K8S_NAMESPACE_NAME, "prod".to_owned()),
                (sc::K8S_NODE_NAME, "node-a".to_owned())
            ]
        );
        assert!(!format!("{attrs:?}").contains("hunter2"));
        // Not in a pod: nothing, not even goscope's own node.
        assert!(k8s_attributes(b"PATH=/bin\0POD_NAME=x\0", "0::/user.slice\n", Some("node-a".into())).is_empty());
        // A pod's cgroup is enough; its environment's POD_UID wins over the cgroup's.
        let uid = "1a2b3c4d-0000-4e5f-8a9b-0123456789ab";
        let cgroup = format!("0::/kubepods/besteffort/pod{uid}/{}\n", "c".repeat(64));
        assert_eq!(k8s_attributes(b"", &cgroup, None), [(sc::K8S_POD_UID, uid.to_owned())]);
        assert_eq!(k8s_attributes(b"POD_UID=other\0", &cgroup, None), [(sc::K8S_POD_UID, "other".to_owned())]);
        // A prefix of a name is not the name.
        assert_eq!(environ_var(b"POD_NAMESPACE=prod\0", "POD_NAME"), None);
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
        let instance = get("service.instance.id").expect("a service.instance.id");
        assert!(instance.ends_with(":42") || instance == "42", "{instance}");
        assert_ne!(
            instance,
            resource(&ProcessInfo { pid: 43, ..info.clone() }, None).get(&"service.instance.id".into()).unwrap().to_string()
        );
        assert_eq!(get("process.runtime.version").as_deref(), Some("1.22.3"));
        let r = resource(&info, Some("checkout"));
        assert_eq!(r.get(&opentelemetry::Key::from("service.name")).map(|v| v.to_string()).as_deref(), Some("checkout"));
    }
}
