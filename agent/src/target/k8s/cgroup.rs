//! A process's pod and container, from its cgroup path as the kubelet names it.
//!
//! The kubelet puts every container in a cgroup under `kubepods`, named after the pod's UID and the
//! container runtime's ID, in one of two spellings depending on its cgroup driver:
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<container-id>` (QoS level absent for Guaranteed);
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _ for ->.slice/
//!   cri-containerd-<container-id>.scope` (`docker-`, `crio-` likewise).
//!
//! Nested runtimes (kind, a kubelet in a container) prefix the path; only the segments matter.

/// What the cgroup path says about a process's place in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupIdentity {
    /// The pod's `metadata.uid`, with dashes, when the process runs in a pod.
    pub pod_uid: Option<String>,
    /// The container runtime's ID (64 hex digits), in or out of Kubernetes.
    pub container_id: Option<String>,
}

impl CgroupIdentity {
    /// Reads `/proc/PID/cgroup` (any cgroup version) and picks the most specific line.
    pub fn from_proc_cgroup(text: &str) -> Self {
        text.lines()
            .filter_map(|line| line.splitn(3, ':').nth(2))
            .map(Self::from_path)
            .max_by_key(|id| (id.pod_uid.is_some(), id.container_id.is_some()))
            .unwrap_or_default()
    }

    /// One cgroup path.
    pub fn from_path(path: &str) -> Self {
        let mut id = Self::default();
        for segment in path.split('/') {
            if let Some(uid) = pod_uid_of(segment) {
                id.pod_uid = Some(uid);
            } else if let Some(cid) = container_id_of(segment) {
                id.container_id = Some(cid);
            }
        }
        id
    }
}

/// `pod<uid>` (cgroupfs) or `[kubelet-]kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(segment: &str) -> Option<String> {
    let rest = segment.strip_suffix(".slice").unwrap_or(segment);
    let uid = if let Some(uid) = rest.strip_prefix("pod") {
        uid
    } else if rest.contains("kubepods") {
        &rest[rest.rfind("-pod")? + "-pod".len()..]
    } else {
        return None;
    };
    let uid = uid.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// `<64 hex>`, or `<runtime>-<64 hex>.scope` (`cri-containerd-`, `docker-`, `crio-`), or
/// `<runtime>:<64 hex>` as some runtimes write it.
fn container_id_of(segment: &str) -> Option<String> {
    let rest = segment.strip_suffix(".scope").unwrap_or(segment);
    // conmon, CRI-O's monitor process, lives beside the container under the same ID: not it.
    if rest.starts_with("crio-conmon-") {
        return None;
    }
    let id = rest.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5d7e8a1c-3f2b-4c6d-9e0f-1a2b3c4d5e6f";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn expect(path: &str) {
        let id = CgroupIdentity::from_path(path);
        assert_eq!(id.pod_uid.as_deref(), Some(UID), "{path}");
        assert_eq!(id.container_id.as_deref(), Some(CID), "{path}");
    }

    #[test]
    fn cgroupfs_driver_with_and_without_qos_class() {
        expect(&format!("/kubepods/burstable/pod{UID}/{CID}"));
        expect(&format!("/kubepods/besteffort/pod{UID}/{CID}"));
        expect(&format!("/kubepods/pod{UID}/{CID}"));
    }

    #[test]
    fn systemd_driver_for_each_runtime_and_nested_under_another_kubelet() {
        let uid = UID.replace('-', "_");
        expect(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{CID}.scope"));
        expect(&format!("/kubepods.slice/kubepods-pod{uid}.slice/docker-{CID}.scope"));
        expect(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/crio-{CID}.scope"));
        expect(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid}.slice/cri-containerd-{CID}.scope"
        ));
    }

    #[test]
    fn proc_cgroup_v1_picks_the_line_that_names_the_pod() {
        let text = format!("12:pids:/kubepods/burstable/pod{UID}/{CID}\n4:memory:/process_api/ad23ca51\n0::/\n");
        let id = CgroupIdentity::from_proc_cgroup(&text);
        assert_eq!((id.pod_uid.as_deref(), id.container_id.as_deref()), (Some(UID), Some(CID)));
    }

    #[test]
    fn outside_kubernetes_there_is_no_pod_but_maybe_a_container() {
        let docker = CgroupIdentity::from_proc_cgroup(&format!("0::/system.slice/docker-{CID}.scope\n"));
        assert_eq!((docker.pod_uid, docker.container_id.as_deref()), (None, Some(CID)));
        assert_eq!(CgroupIdentity::from_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"), CgroupIdentity::default());
        assert_eq!(CgroupIdentity::from_proc_cgroup("garbage\n\n::\n"), CgroupIdentity::default());
    }

    #[test]
    fn near_misses_are_not_identities() {
        assert_eq!(pod_uid_of("pod123"), None);
        assert_eq!(pod_uid_of("podcast"), None);
        assert_eq!(container_id_of(&format!("crio-conmon-{CID}.scope")), None);
        assert_eq!(container_id_of(&CID[1..]), None);
    }
}
