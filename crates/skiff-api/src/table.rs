//! Server-side `Table` output (`meta.k8s.io/v1`): the columns `kubectl get` prints, per kind,
//! following upstream's printers, and `additionalPrinterColumns` for custom resources.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::registry::ResourceType;

/// A column definition: (name, type, priority). Priority 1 columns show with `-o wide`.
type Col = (&'static str, &'static str, u8);

const NAME: Col = ("Name", "string", 0);
const AGE: Col = ("Age", "string", 0);

fn columns(t: &ResourceType) -> Vec<Col> {
    match (t.group.as_str(), t.kind.as_str()) {
        ("", "Pod") => vec![
            NAME,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("", "Service") => vec![
            NAME,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            AGE,
            ("Selector", "string", 1),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "StatefulSet") => vec![
            NAME,
            ("Ready", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "DaemonSet") => vec![
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "ControllerRevision") => vec![NAME, ("Controller", "string", 0), ("Revision", "integer", 0), AGE],
        ("batch", "Job") => vec![
            NAME,
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "CronJob") => vec![
            NAME,
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("", "Namespace") => vec![NAME, ("Status", "string", 0), AGE],
        ("", "Node") => vec![
            NAME,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            AGE,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        ("", "ConfigMap") => vec![NAME, ("Data", "integer", 0), AGE],
        ("", "Secret") => vec![NAME, ("Type", "string", 0), ("Data", "integer", 0), AGE],
        ("", "ServiceAccount") => vec![NAME, ("Secrets", "integer", 0), AGE],
        ("", "Endpoints") => vec![NAME, ("Endpoints", "string", 0), AGE],
        ("", "Event") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            AGE,
            ("VolumeMode", "string", 1),
        ],
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            AGE,
            ("VolumeMode", "string", 1),
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            NAME,
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            AGE,
        ],
        ("networking.k8s.io", "Ingress") => {
            vec![
                NAME,
                ("Class", "string", 0),
                ("Hosts", "string", 0),
                ("Address", "string", 0),
                ("Ports", "string", 0),
                AGE,
            ]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            NAME,
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "string", 0),
            ("Replicas", "string", 0),
            AGE,
        ],
        ("coordination.k8s.io", "Lease") => vec![NAME, ("Holder", "string", 0), AGE],
        _ => vec![NAME, ("Created At", "date", 0)],
    }
}

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let dy = (h / 24) % 365;
        return if dy == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{}d", h / 24 / 365, dy)
        };
    }
    format!("{}y", h / 24 / 365)
}

fn age(ts: &Value, now: DateTime<Utc>) -> String {
    ts.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| human_duration((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

fn containers_images(pod_spec: &Value) -> (String, String) {
    let cs = pod_spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: &Value) -> String {
    match crate::selector::LabelSelector::from_json(sel) {
        Ok(ls) if !ls.is_empty() => ls.to_query(),
        _ => "<none>".into(),
    }
}

fn map_selector(sel: &Value) -> String {
    sel.as_object()
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "<none>".into())
}

/// Upstream's pod STATUS column logic, simplified to the cases a kubectl user sees.
pub fn pod_status(pod: &Value) -> String {
    let status = &pod["status"];
    let mut reason = s(&status["phase"]).to_string();
    if !s(&status["reason"]).is_empty() {
        reason = s(&status["reason"]).to_string();
    }
    let mut initializing = false;
    if let Some(inits) = status["initContainerStatuses"].as_array() {
        let total = pod["spec"]["initContainers"].as_array().map_or(0, Vec::len);
        for (idx, c) in inits.iter().enumerate() {
            let st = &c["state"];
            if st["terminated"].is_object() && i(&st["terminated"]["exitCode"]) == 0 {
                continue;
            }
            initializing = true;
            reason = if st["terminated"].is_object() {
                let r = s(&st["terminated"]["reason"]);
                if r.is_empty() {
                    format!("Init:ExitCode:{}", i(&st["terminated"]["exitCode"]))
                } else {
                    format!("Init:{r}")
                }
            } else if !s(&st["waiting"]["reason"]).is_empty() && s(&st["waiting"]["reason"]) != "PodInitializing" {
                format!("Init:{}", s(&st["waiting"]["reason"]))
            } else {
                format!("Init:{idx}/{total}")
            };
            break;
        }
    }
    if !initializing {
        let mut has_running = false;
        if let Some(cs) = status["containerStatuses"].as_array() {
            for c in cs.iter().rev() {
                let st = &c["state"];
                if !s(&st["waiting"]["reason"]).is_empty() {
                    reason = s(&st["waiting"]["reason"]).to_string();
                } else if st["terminated"].is_object() {
                    let r = s(&st["terminated"]["reason"]);
                    reason = if !r.is_empty() {
                        r.to_string()
                    } else if i(&st["terminated"]["signal"]) != 0 {
                        format!("Signal:{}", i(&st["terminated"]["signal"]))
                    } else {
                        format!("ExitCode:{}", i(&st["terminated"]["exitCode"]))
                    };
                } else if c["ready"] == Value::Bool(true) && st["running"].is_object() {
                    has_running = true;
                }
            }
            if reason == "Completed" && has_running {
                let ready = status["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| s(&c["type"]) == "Ready" && s(&c["status"]) == "True"));
                reason = if ready { "Running".into() } else { "NotReady".into() };
            }
        }
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        reason = if s(&status["reason"]) == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn cells(t: &ResourceType, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let m = &o["metadata"];
    let name = json!(s(&m["name"]));
    let created = age(&m["creationTimestamp"], now);
    let spec = &o["spec"];
    let st = &o["status"];
    match (t.group.as_str(), t.kind.as_str()) {
        ("", "Pod") => {
            let cs = st["containerStatuses"].as_array().cloned().unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = cs.iter().filter(|c| c["ready"] == Value::Bool(true)).count();
            let restarts: i64 = cs.iter().map(|c| i(&c["restartCount"])).sum();
            let gates = spec["readinessGates"].as_array().map_or(0, Vec::len);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(created),
                json!(or_none(s(&st["podIP"]).to_string())),
                json!(or_none(s(&spec["nodeName"]).to_string())),
                json!(or_none(s(&st["nominatedNodeName"]).to_string())),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        ("", "Service") => {
            let ty = s(&spec["type"]);
            let ports = spec["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(np) if np != 0 => format!("{}:{np}/{proto}", i(&p["port"])),
                                _ => format!("{}/{proto}", i(&p["port"])),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let external = match ty {
                "ExternalName" => s(&spec["externalName"]).to_string(),
                "LoadBalancer" => {
                    let ing: Vec<String> = st["loadBalancer"]["ingress"]
                        .as_array()
                        .map(|a| a.iter().map(|x| s(&x["ip"]).to_string()).collect())
                        .unwrap_or_default();
                    if ing.is_empty() {
                        "<pending>".into()
                    } else {
                        ing.join(",")
                    }
                }
                _ => spec["externalIPs"]
                    .as_array()
                    .map(|a| a.iter().map(|x| s(x).to_string()).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
            };
            let cluster_ip = s(&spec["clusterIP"]);
            vec![
                name,
                json!(ty),
                json!(if cluster_ip.is_empty() { "<none>" } else { cluster_ip }),
                json!(or_none(external)),
                json!(or_none(ports)),
                json!(created),
                json!(map_selector(&spec["selector"])),
            ]
        }
        ("apps", "Deployment") => {
            let (c, img) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!("{}/{}", i(&st["readyReplicas"]), i(&spec["replicas"]))),
                json!(i(&st["updatedReplicas"])),
                json!(i(&st["availableReplicas"])),
                json!(created),
                json!(c),
                json!(img),
                json!(selector_string(&spec["selector"])),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, img) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!("{}/{}", i(&st["readyReplicas"]), i(&spec["replicas"]))),
                json!(created),
                json!(c),
                json!(img),
            ]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let (c, img) = containers_images(&spec["template"]["spec"]);
            let sel = if t.kind == "ReplicaSet" {
                selector_string(&spec["selector"])
            } else {
                map_selector(&spec["selector"])
            };
            vec![
                name,
                json!(i(&spec["replicas"])),
                json!(i(&st["replicas"])),
                json!(i(&st["readyReplicas"])),
                json!(created),
                json!(c),
                json!(img),
                json!(sel),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, img) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(i(&st["desiredNumberScheduled"])),
                json!(i(&st["currentNumberScheduled"])),
                json!(i(&st["numberReady"])),
                json!(i(&st["updatedNumberScheduled"])),
                json!(i(&st["numberAvailable"])),
                json!(map_selector(&spec["template"]["spec"]["nodeSelector"])),
                json!(created),
                json!(c),
                json!(img),
                json!(selector_string(&spec["selector"])),
            ]
        }
        ("apps", "ControllerRevision") => {
            let owner = m["ownerReferences"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["controller"] == Value::Bool(true)))
                .map(|r| {
                    let group = s(&r["apiVersion"])
                        .split('/')
                        .next()
                        .filter(|_| s(&r["apiVersion"]).contains('/'))
                        .unwrap_or("");
                    let kind = s(&r["kind"]).to_lowercase();
                    if group.is_empty() {
                        format!("{kind}/{}", s(&r["name"]))
                    } else {
                        format!("{kind}.{group}/{}", s(&r["name"]))
                    }
                })
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(owner), json!(i(&o["revision"])), json!(created)]
        }
        ("batch", "Job") => {
            let (c, img) = containers_images(&spec["template"]["spec"]);
            let completions = match spec["completions"].as_i64() {
                Some(n) => format!("{}/{n}", i(&st["succeeded"])),
                None => format!(
                    "{}/1 of {}",
                    i(&st["succeeded"]),
                    spec["parallelism"].as_i64().unwrap_or(1)
                ),
            };
            let cond = |ty: &str| {
                st["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| s(&c["type"]) == ty && s(&c["status"]) == "True"))
            };
            let status = if cond("Complete") {
                "Complete"
            } else if cond("Failed") {
                "Failed"
            } else if !m["deletionTimestamp"].is_null() {
                "Terminating"
            } else if cond("Suspended") {
                "Suspended"
            } else if cond("FailureTarget") {
                "FailureTarget"
            } else if cond("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            let duration = match (st["startTime"].as_str(), st["completionTime"].as_str()) {
                (Some(a), Some(b)) => match (DateTime::parse_from_rfc3339(a), DateTime::parse_from_rfc3339(b)) {
                    (Ok(a), Ok(b)) => human_duration((b - a).num_seconds()),
                    _ => String::new(),
                },
                (Some(a), None) => DateTime::parse_from_rfc3339(a)
                    .map(|a| human_duration((now - a.with_timezone(&Utc)).num_seconds()))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                json!(created),
                json!(c),
                json!(img),
                json!(selector_string(&spec["selector"])),
            ]
        }
        ("batch", "CronJob") => {
            let (c, img) = containers_images(&spec["jobTemplate"]["spec"]["template"]["spec"]);
            let last = if st["lastScheduleTime"].is_null() {
                "<none>".to_string()
            } else {
                age(&st["lastScheduleTime"], now)
            };
            vec![
                name,
                json!(s(&spec["schedule"])),
                json!(or_none(s(&spec["timeZone"]).to_string())),
                json!(spec["suspend"].as_bool().unwrap_or(false)),
                json!(st["active"].as_array().map_or(0, Vec::len)),
                json!(last),
                json!(created),
                json!(c),
                json!(img),
                json!(selector_string(&spec["jobTemplate"]["spec"]["selector"])),
            ]
        }
        ("", "Namespace") => vec![name, json!(s(&st["phase"])), json!(created)],
        ("", "Node") => {
            let conds = st["conditions"].as_array().cloned().unwrap_or_default();
            let mut status: Vec<String> = Vec::new();
            match conds.iter().find(|c| s(&c["type"]) == "Ready") {
                Some(c) if s(&c["status"]) == "True" => status.push("Ready".into()),
                _ => status.push(if conds.is_empty() {
                    "Unknown".into()
                } else {
                    "NotReady".into()
                }),
            }
            if spec["unschedulable"] == Value::Bool(true) {
                status.push("SchedulingDisabled".into());
            }
            let roles: Vec<String> = m["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let addr = |ty: &str| {
                st["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| s(&x["type"]) == ty))
                    .map(|x| s(&x["address"]).to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            let info = &st["nodeInfo"];
            vec![
                name,
                json!(status.join(",")),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                json!(created),
                json!(s(&info["kubeletVersion"])),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(or_none(s(&info["osImage"]).to_string())),
                json!(or_none(s(&info["kernelVersion"]).to_string())),
                json!(or_none(s(&info["containerRuntimeVersion"]).to_string())),
            ]
        }
        ("", "ConfigMap") => {
            let n = o["data"].as_object().map_or(0, |m| m.len()) + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), json!(created)]
        }
        ("", "Secret") => {
            let n = o["data"].as_object().map_or(0, |m| m.len());
            vec![name, json!(s(&o["type"])), json!(n), json!(created)]
        }
        ("", "ServiceAccount") => vec![name, json!(o["secrets"].as_array().map_or(0, Vec::len)), json!(created)],
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for sub in o["subsets"].as_array().into_iter().flatten() {
                for a in sub["addresses"].as_array().into_iter().flatten() {
                    for p in sub["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", s(&a["ip"]), i(&p["port"])));
                    }
                    if sub["ports"].as_array().is_none_or(|p| p.is_empty()) {
                        eps.push(s(&a["ip"]).to_string());
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(or_none(shown)), json!(created)]
        }
        ("", "Event") => {
            let io = &o["involvedObject"];
            let last = if !o["lastTimestamp"].is_null() {
                &o["lastTimestamp"]
            } else if !o["eventTime"].is_null() {
                &o["eventTime"]
            } else {
                &m["creationTimestamp"]
            };
            let first = if !o["firstTimestamp"].is_null() {
                &o["firstTimestamp"]
            } else {
                last
            };
            let source = {
                let c = s(&o["source"]["component"]);
                let c = if c.is_empty() { s(&o["reportingComponent"]) } else { c };
                let h = s(&o["source"]["host"]);
                if h.is_empty() {
                    c.to_string()
                } else {
                    format!("{c}, {h}")
                }
            };
            vec![
                json!(age(last, now)),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!("{}/{}", s(&io["kind"]).to_lowercase(), s(&io["name"]))),
                json!(s(&io["fieldPath"])),
                json!(source),
                json!(s(&o["message"]).trim()),
                json!(age(first, now)),
                json!(o["count"].as_i64().unwrap_or(1).to_string()),
                name,
            ]
        }
        ("", "PersistentVolume") => {
            let claim = if spec["claimRef"].is_object() {
                format!("{}/{}", s(&spec["claimRef"]["namespace"]), s(&spec["claimRef"]["name"]))
            } else {
                String::new()
            };
            vec![
                name,
                json!(s(&spec["capacity"]["storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(s(&spec["persistentVolumeReclaimPolicy"])),
                json!(s(&st["phase"])),
                json!(claim),
                json!(s(&spec["storageClassName"])),
                json!(or_unset(s(&spec["volumeAttributesClassName"]))),
                json!(s(&st["reason"])),
                json!(created),
                json!(s(&spec["volumeMode"])),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            let bound = s(&st["phase"]) == "Bound";
            vec![
                name,
                json!(s(&st["phase"])),
                json!(s(&spec["volumeName"])),
                json!(if bound { s(&st["capacity"]["storage"]) } else { "" }),
                json!(if bound {
                    access_modes(&st["accessModes"])
                } else {
                    String::new()
                }),
                json!(s(&spec["storageClassName"])),
                json!(or_unset(s(&spec["volumeAttributesClassName"]))),
                json!(created),
                json!(s(&spec["volumeMode"])),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let default = m["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true";
            let shown = if default {
                format!("{} (default)", s(&m["name"]))
            } else {
                s(&m["name"]).to_string()
            };
            vec![
                json!(shown),
                json!(s(&o["provisioner"])),
                json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
                json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false).to_string()),
                json!(created),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<&str> = spec["rules"]
                .as_array()
                .map(|r| r.iter().map(|x| s(&x["host"])).filter(|h| !h.is_empty()).collect())
                .unwrap_or_default();
            let addrs: Vec<&str> = st["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| a.iter().map(|x| s(&x["ip"])).collect())
                .unwrap_or_default();
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                json!(or_none(s(&spec["ingressClassName"]).to_string())),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addrs.join(",")),
                json!(ports),
                json!(created),
            ]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let r = &spec["scaleTargetRef"];
            vec![
                name,
                json!(format!("{}/{}", s(&r["kind"]), s(&r["name"]))),
                json!(hpa_targets(o)),
                json!(spec["minReplicas"].as_i64().unwrap_or(1).to_string()),
                json!(i(&spec["maxReplicas"]).to_string()),
                json!(i(&st["currentReplicas"]).to_string()),
                json!(created),
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(&spec["holderIdentity"])), json!(created)]
        }
        _ => vec![name, m["creationTimestamp"].clone()],
    }
}

fn or_unset(v: &str) -> String {
    if v.is_empty() {
        "<unset>".into()
    } else {
        v.into()
    }
}

fn access_modes(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| match s(m) {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn hpa_targets(o: &Value) -> String {
    let metrics = o["spec"]["metrics"].as_array().cloned().unwrap_or_default();
    if let Some(cpu) = o["spec"]["targetCPUUtilizationPercentage"].as_i64() {
        let cur = o["status"]["currentCPUUtilizationPercentage"]
            .as_i64()
            .map(|c| format!("{c}%"))
            .unwrap_or_else(|| "<unknown>".into());
        return format!("cpu: {cur}/{cpu}%");
    }
    if metrics.is_empty() {
        return "<none>".into();
    }
    metrics
        .iter()
        .map(|m| {
            let res = &m["resource"];
            let target = &res["target"];
            let want = target["averageUtilization"]
                .as_i64()
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| s(&target["averageValue"]).to_string());
            format!("{}: <unknown>/{want}", s(&res["name"]))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Evaluate a simple JSONPath of `additionalPrinterColumns` (`.spec.size`, `.status.conditions[0].type`).
fn simple_jsonpath<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = o;
    for seg in path.trim_start_matches('.').split('.').filter(|s| !s.is_empty()) {
        let (field, idx) = match seg.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn custom_columns(t: &ResourceType) -> Vec<Value> {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    if t.printer_columns.is_empty() {
        cols.push(json!({"name": "Created At", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    for c in &t.printer_columns {
        cols.push(json!({
            "name": s(&c["name"]),
            "type": c["type"].as_str().unwrap_or("string"),
            "format": s(&c["format"]),
            "description": s(&c["description"]),
            "priority": c["priority"].as_i64().unwrap_or(0),
        }));
    }
    cols
}

fn custom_cells(t: &ResourceType, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut cells = vec![json!(s(&o["metadata"]["name"]))];
    if t.printer_columns.is_empty() {
        cells.push(o["metadata"]["creationTimestamp"].clone());
    }
    for c in &t.printer_columns {
        let v = simple_jsonpath(o, s(&c["jsonPath"])).cloned().unwrap_or(Value::Null);
        cells.push(match (c["type"].as_str(), &v) {
            (Some("date"), Value::String(_)) => json!(age(&v, now)),
            _ => v,
        });
    }
    cells
}

/// The column definitions of a kind's table.
pub fn column_definitions(t: &ResourceType) -> Vec<Value> {
    if t.is_custom() {
        return custom_columns(t);
    }
    columns(t)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" && priority == 0 { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        })
        .collect()
}

/// One table row for an object. `include` is the `includeObject` policy.
pub fn row(t: &ResourceType, o: &Value, include: IncludeObject, now: DateTime<Utc>) -> Value {
    let cells = if t.is_custom() {
        custom_cells(t, o, now)
    } else {
        cells(t, o, now)
    };
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => o.clone(),
        IncludeObject::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
        }
    };
    if object.is_null() {
        json!({"cells": cells})
    } else {
        json!({"cells": cells, "object": object})
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(kind: &str) -> std::sync::Arc<ResourceType> {
        crate::registry::builtin_types()
            .into_iter()
            .find(|t| t.kind == kind && t.preferred)
            .expect("kind")
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d");
        assert_eq!(human_duration(86400 * 400), "400d");
    }

    #[test]
    fn pod_row_shows_ready_status_restarts() {
        let now = Utc::now();
        let pod = json!({"metadata": {"name": "web-0", "creationTimestamp": (now - chrono::Duration::seconds(30)).to_rfc3339()},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let r = row(&ty("Pod"), &pod, IncludeObject::Metadata, now);
        assert_eq!(
            r["cells"],
            json!([
                "web-0",
                "1/2",
                "CrashLoopBackOff",
                "3",
                "30s",
                "10.42.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(column_definitions(&ty("Pod")).len(), 9);
    }

    #[test]
    fn headless_service_row() {
        let svc = json!({"metadata": {"name": "nginx"}, "spec": {"type": "ClusterIP", "clusterIP": "None", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "nginx"}}});
        let r = row(&ty("Service"), &svc, IncludeObject::None, Utc::now());
        assert_eq!(r["cells"][2], "None");
        assert_eq!(r["cells"][4], "80/TCP");
        assert_eq!(r["cells"][6], "app=nginx");
    }
}
