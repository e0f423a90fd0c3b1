//! A pod's QoS class and what follows from it on the node, as the kubelet computes them: the
//! class (Guaranteed, Burstable, BestEffort), the OOM score adjustment of its containers, and
//! the cgroup they live in (`/kubepods[/burstable|/besteffort]/pod<uid>/<container-id>`, the
//! kubelet's cgroupfs layout). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// A pod's quality-of-service class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has CPU and memory limits equal to its requests.
    Guaranteed,
    /// Some container has a request or limit, but the pod is not Guaranteed.
    Burstable,
    /// No container has a CPU or memory request or limit.
    BestEffort,
}

impl QosClass {
    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

const RESOURCES: [&str; 2] = ["cpu", "memory"];

fn get<'a>(m: Option<&'a BTreeMap<String, Quantity>>, key: &str) -> Option<&'a Quantity> {
    m.and_then(|m| m.get(key))
        .filter(|q| quantity::milli_value(&q.0).is_some_and(|v| v > 0))
}

/// The pod's QoS class (init containers count, as in the kubelet; a request without a limit
/// is Burstable; an unset request defaults to the limit).
pub fn qos_class(pod: &PodSpec) -> QosClass {
    let containers: Vec<&Container> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        for r in RESOURCES {
            let (req, lim) = (get(requests, r), get(limits, r));
            any |= req.is_some() || lim.is_some();
            let same = match (req, lim) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(q), Some(l)) => quantity::milli_value(&q.0) == quantity::milli_value(&l.0),
            };
            guaranteed &= same;
        }
    }
    match (any, guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}

/// The OOM score adjustment of a container (the kubelet's `GetContainerOOMScoreAdjust`):
/// -997 for Guaranteed, 1000 for BestEffort, and for Burstable `1000 - 1000 * request /
/// capacity` kept within 2..=999, so that containers using less than they asked for are
/// killed last.
pub fn oom_score_adj(class: QosClass, container: &Container, node_memory_bytes: i128) -> i32 {
    match class {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"))
                .and_then(|q| quantity::value(&q.0))
                .unwrap_or(0);
            if node_memory_bytes <= 0 {
                return 999;
            }
            let adj = 1000 - (1000 * request) / node_memory_bytes;
            adj.clamp(2, 999) as i32
        }
    }
}

/// The pod's cgroup (cgroupfs layout): `/kubepods/pod<uid>` for Guaranteed,
/// `/kubepods/burstable/pod<uid>`, `/kubepods/besteffort/pod<uid>`.
pub fn pod_cgroup(root: &str, class: QosClass, pod_uid: &str) -> String {
    let root = root.trim_end_matches('/');
    let uid = cgroup_uid(pod_uid);
    match class {
        QosClass::Guaranteed => format!("{root}/pod{uid}"),
        QosClass::Burstable => format!("{root}/burstable/pod{uid}"),
        QosClass::BestEffort => format!("{root}/besteffort/pod{uid}"),
    }
}

/// A pod UID as its cgroup's name has it (`pod<this>`): anything but ASCII letters, digits
/// and `-` becomes `_`.
pub fn cgroup_uid(pod_uid: &str) -> String {
    pod_uid
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

/// Removes the empty pod cgroups under `root` (every QoS class, every hierarchy mounted under
/// `mount`: each v1 controller's, or the one v2 tree) of the pods for which `gone(uid)` holds,
/// as the kubelet does once a pod's containers are gone: runtimes remove a container's own
/// cgroup, never the pod's parent of it. A cgroup still in use (a container in it) is not
/// empty, and the kernel refuses to remove it; that is left for the next call. Returns how
/// many were removed.
pub fn remove_pod_cgroups(mount: &std::path::Path, root: &str, gone: impl Fn(&str) -> bool) -> usize {
    let root = root.trim_matches('/');
    let hierarchies: Vec<std::path::PathBuf> = if mount.join("cgroup.controllers").exists() {
        vec![mount.to_path_buf()]
    } else {
        std::fs::read_dir(mount)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut removed = 0;
    for h in hierarchies {
        for parent in [
            h.join(root),
            h.join(root).join("burstable"),
            h.join(root).join("besteffort"),
        ] {
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(uid) = name.to_str().and_then(|n| n.strip_prefix("pod")) else {
                    continue;
                };
                if gone(uid) && e.path().is_dir() && std::fs::remove_dir(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ResourceRequirements;

    use super::*;

    fn c(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let m = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: m(requests),
                limits: m(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            ..Default::default()
        }
    }

    #[test]
    fn classes() {
        let full = [("cpu", "1"), ("memory", "1Gi")];
        assert_eq!(qos_class(&pod(vec![c(&[], &[])], vec![])), QosClass::BestEffort);
        assert_eq!(qos_class(&pod(vec![c(&full, &full)], vec![])), QosClass::Guaranteed);
        assert_eq!(
            qos_class(&pod(vec![c(&[], &full)], vec![])),
            QosClass::Guaranteed,
            "requests default to limits"
        );
        assert_eq!(
            qos_class(&pod(vec![c(&[("cpu", "1000m"), ("memory", "1024Mi")], &full)], vec![])),
            QosClass::Guaranteed,
            "equal quantities in other units"
        );
        assert_eq!(
            qos_class(&pod(vec![c(&[("cpu", "500m")], &full)], vec![])),
            QosClass::Burstable
        );
        assert_eq!(
            qos_class(&pod(vec![c(&[("memory", "1Gi")], &[])], vec![])),
            QosClass::Burstable
        );
        assert_eq!(
            qos_class(&pod(vec![c(&full, &full)], vec![c(&[], &[])])),
            QosClass::Burstable,
            "an init container without limits"
        );
        assert_eq!(
            qos_class(&pod(vec![c(&full, &full), c(&[], &[])], vec![])),
            QosClass::Burstable
        );
        assert_eq!(
            qos_class(&pod(vec![c(&[("cpu", "0")], &[("memory", "garbage")])], vec![])),
            QosClass::BestEffort,
            "zero and unparsable quantities count as unset"
        );
        assert_eq!(QosClass::Burstable.as_str(), "Burstable");
    }

    #[test]
    fn oom_scores() {
        let gi = 1i128 << 30;
        let none = c(&[], &[]);
        assert_eq!(oom_score_adj(QosClass::Guaranteed, &none, 8 * gi), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, &none, 8 * gi), 1000);
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &c(&[("memory", "2Gi")], &[]), 8 * gi),
            750
        );
        assert_eq!(oom_score_adj(QosClass::Burstable, &none, 8 * gi), 999);
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &c(&[("memory", "8Gi")], &[]), 8 * gi),
            2
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &c(&[("memory", "64Gi")], &[]), 8 * gi),
            2
        );
        assert_eq!(oom_score_adj(QosClass::Burstable, &none, 0), 999);
    }

    #[test]
    fn cgroups() {
        assert_eq!(pod_cgroup("/kubepods", QosClass::Guaranteed, "a-b"), "/kubepods/poda-b");
        assert_eq!(
            pod_cgroup("/kubepods/", QosClass::Burstable, "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            pod_cgroup("/skiff", QosClass::BestEffort, "../x"),
            "/skiff/besteffort/pod___x"
        );
    }

    #[test]
    fn pod_cgroups_of_gone_pods_are_removed_when_empty() {
        // v1: a hierarchy per controller.
        let v1 = tempfile::tempdir().expect("tmp");
        let dirs = [
            "memory/kubepods/burstable/poda",
            "pids/kubepods/besteffort/poda",
            "memory/kubepods/podb/container-1",
            "memory/kubepods/podkept",
            "memory/other/podc",
        ];
        for d in dirs {
            std::fs::create_dir_all(v1.path().join(d)).expect("mkdir");
        }
        let gone = |uid: &str| uid != "kept";
        assert_eq!(remove_pod_cgroups(v1.path(), "/kubepods", gone), 2);
        assert!(!v1.path().join("memory/kubepods/burstable/poda").exists());
        assert!(!v1.path().join("pids/kubepods/besteffort/poda").exists());
        // Still in use (a container's cgroup in it), kept by the caller, or not Skiff's.
        assert!(v1.path().join("memory/kubepods/podb/container-1").exists());
        assert!(v1.path().join("memory/kubepods/podkept").exists());
        assert!(v1.path().join("memory/other/podc").exists());
        // v2: one tree.
        let v2 = tempfile::tempdir().expect("tmp");
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids\n").expect("write");
        std::fs::create_dir_all(v2.path().join("kubepods/podx")).expect("mkdir");
        assert_eq!(remove_pod_cgroups(v2.path(), "kubepods/", |u| u == "x"), 1);
        assert!(!v2.path().join("kubepods/podx").exists());
    }
}
