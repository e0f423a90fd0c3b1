//! Defaulting as the Kubernetes API server does it on create and update (the values users see
//! in `kubectl get -o yaml` without having written them).

use serde_json::{json, Map, Value};

use crate::registry::ResourceType;

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    // `:latest` or no tag (and no digest) → Always.
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = obj(c) else { return };
    let image = m.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set_default(m, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    set_default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = obj(spec) else { return };
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "securityContext", json!({}));
    set_default(m, "schedulerName", json!("default-scheduler"));
    if let Some(sa) = m.get("serviceAccountName").cloned() {
        set_default(m, "serviceAccount", sa);
    }
    for list in ["initContainers", "containers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(vols) = m.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols.iter_mut().filter_map(Value::as_object_mut) {
            for (src, mode_key) in [
                ("configMap", "defaultMode"),
                ("secret", "defaultMode"),
                ("projected", "defaultMode"),
                ("downwardAPI", "defaultMode"),
            ] {
                if let Some(s) = v.get_mut(src).and_then(Value::as_object_mut) {
                    set_default(s, mode_key, json!(420));
                }
            }
            if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                set_default(h, "type", json!(""));
            }
            let sources = v
                .get_mut("projected")
                .and_then(|p| p.get_mut("sources"))
                .and_then(Value::as_array_mut);
            for src in sources.into_iter().flatten() {
                if let Some(t) = src.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                    set_default(t, "expirationSeconds", json!(3600));
                }
            }
        }
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template") {
        if let Some(ps) = t.get_mut("spec") {
            default_pod_spec(ps);
        }
        if let Some(tm) = t.as_object_mut() {
            if let Some(meta) = tm.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("creationTimestamp");
            }
        }
    }
}

/// Fill in the defaults of a kind. Idempotent.
pub fn apply(t: &ResourceType, v: &mut Value) {
    if t.is_custom() {
        return;
    }
    let kind = t.kind.as_str();
    let group = t.group.as_str();
    let Some(root) = obj(v) else { return };
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = root.get_mut("spec") {
                default_pod_spec(spec);
                if let Some(s) = spec.as_object_mut() {
                    set_default(s, "enableServiceLinks", json!(true));
                    set_default(s, "preemptionPolicy", json!("PreemptLowerPriority"));
                    set_default(s, "priority", json!(0));
                    if !s.contains_key("tolerations") {
                        s.insert(
                            "tolerations".into(),
                            json!([
                                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                            ]),
                        );
                    }
                }
            }
            let status = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = status.as_object_mut() {
                set_default(st, "phase", json!("Pending"));
                set_default(st, "qosClass", json!("BestEffort"));
            }
        }
        ("", "Service") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "type", json!("ClusterIP"));
                set_default(s, "sessionAffinity", json!("None"));
                let ty = s.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
                if ty != "ExternalName" {
                    set_default(s, "internalTrafficPolicy", json!("Cluster"));
                    set_default(s, "ipFamilyPolicy", json!("SingleStack"));
                    set_default(s, "ipFamilies", json!(["IPv4"]));
                }
                if ty == "NodePort" || ty == "LoadBalancer" {
                    set_default(s, "externalTrafficPolicy", json!("Cluster"));
                }
                if s.get("clusterIP").and_then(Value::as_str) == Some("None") {
                    set_default(s, "clusterIPs", json!(["None"]));
                }
                if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
            root.entry("status").or_insert_with(|| json!({"loadBalancer": {}}));
        }
        ("apps", "Deployment") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "replicas", json!(1));
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(s, "progressDeadlineSeconds", json!(600));
                let strategy = s.entry("strategy").or_insert_with(|| json!({}));
                if let Some(st) = strategy.as_object_mut() {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
                default_template(s);
            }
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "replicas", json!(1));
                default_template(s);
            }
        }
        ("apps", "StatefulSet") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "replicas", json!(1));
                set_default(s, "podManagementPolicy", json!("OrderedReady"));
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(
                    s,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(
                    s,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                if let Some(tpls) = s.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
                    for c in tpls.iter_mut().filter_map(Value::as_object_mut) {
                        c.insert("apiVersion".into(), json!("v1"));
                        c.insert("kind".into(), json!("PersistentVolumeClaim"));
                        if let Some(cs) = c.get_mut("spec").and_then(Value::as_object_mut) {
                            set_default(cs, "volumeMode", json!("Filesystem"));
                        }
                        set_default(c, "status", json!({"phase": "Pending"}));
                    }
                }
                default_template(s);
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(
                    s,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
                default_template(s);
            }
        }
        ("batch", "Job") => {
            // The generated selector (unless manualSelector): the job's uid, as upstream does.
            let uid = root
                .get("metadata")
                .and_then(|m| m.get("uid"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                let manual = s.get("manualSelector").and_then(Value::as_bool) == Some(true);
                if !manual && !uid.is_empty() {
                    set_default(
                        s,
                        "selector",
                        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                    );
                    let t = s.entry("template").or_insert_with(|| json!({}));
                    if let Some(t) = t.as_object_mut() {
                        let m = t.entry("metadata").or_insert_with(|| json!({}));
                        if let Some(m) = m.as_object_mut() {
                            let labels = m.entry("labels").or_insert_with(|| json!({}));
                            if let Some(l) = labels.as_object_mut() {
                                l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                                l.insert("batch.kubernetes.io/job-name".into(), json!(name));
                                l.insert("controller-uid".into(), json!(uid));
                                l.insert("job-name".into(), json!(name));
                            }
                        }
                    }
                }
                set_default(s, "parallelism", json!(1));
                set_default(s, "backoffLimit", json!(6));
                set_default(s, "completionMode", json!("NonIndexed"));
                set_default(s, "suspend", json!(false));
                set_default(s, "podReplacementPolicy", json!("TerminatingOrFailed"));
                if !s.contains_key("completions") {
                    s.insert("completions".into(), json!(1));
                }
                default_template(s);
            }
        }
        ("batch", "CronJob") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "concurrencyPolicy", json!("Allow"));
                set_default(s, "suspend", json!(false));
                set_default(s, "successfulJobsHistoryLimit", json!(3));
                set_default(s, "failedJobsHistoryLimit", json!(1));
                if let Some(js) = s
                    .get_mut("jobTemplate")
                    .and_then(|j| j.get_mut("spec"))
                    .and_then(Value::as_object_mut)
                {
                    default_template(js);
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "volumeMode", json!("Filesystem"));
            }
            let status = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = status.as_object_mut() {
                set_default(st, "phase", json!("Pending"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(s) = root.get_mut("spec").and_then(Value::as_object_mut) {
                set_default(s, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(s, "volumeMode", json!("Filesystem"));
            }
            let status = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = status.as_object_mut() {
                set_default(st, "phase", json!("Pending"));
            }
        }
        ("", "Namespace") => {
            let spec = root.entry("spec").or_insert_with(|| json!({}));
            if let Some(s) = spec.as_object_mut() {
                set_default(s, "finalizers", json!(["kubernetes"]));
            }
            let status = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = status.as_object_mut() {
                set_default(st, "phase", json!("Active"));
            }
        }
        ("", "Secret") => set_default(root, "type", json!("Opaque")),
        ("storage.k8s.io", "StorageClass") => {
            set_default(root, "reclaimPolicy", json!("Delete"));
            set_default(root, "volumeBindingMode", json!("Immediate"));
        }
        ("", "Node") => {
            if let Some(st) = root.get_mut("status").and_then(Value::as_object_mut) {
                if let Some(cap) = st.get("capacity").cloned() {
                    set_default(st, "allocatable", cap);
                }
            }
        }
        _ => {}
    }
    // Labels on a namespace include its name (kubernetes.io/metadata.name), as upstream sets.
    if (group, kind) == ("", "Namespace") {
        let name = root
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let (Some(name), Some(meta)) = (name, root.get_mut("metadata").and_then(Value::as_object_mut)) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
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
    fn token_projections_default_to_an_hour() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                                              {"serviceAccountToken": {"path": "t2", "expirationSeconds": 7200}}]}}]}});
        apply(&ty("Pod"), &mut p);
        let sources = &p["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3600);
        assert_eq!(sources[1]["serviceAccountToken"]["expirationSeconds"], 7200);
        assert_eq!(p["spec"]["volumes"][0]["projected"]["defaultMode"], 420);
    }

    #[test]
    fn statefulset_defaults_like_upstream() {
        let mut s = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:latest", "ports": [{"containerPort": 80}]}]}},
                           "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}});
        apply(&ty("StatefulSet"), &mut s);
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        let c = &s["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
        let once = s.clone();
        apply(&ty("StatefulSet"), &mut s);
        assert_eq!(s, once, "idempotent");
    }

    #[test]
    fn pull_policy_follows_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("registry.local:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("registry.local:5000/nginx:1.2"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80, "name": "web"}], "clusterIP": "None"}});
        apply(&ty("Service"), &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["clusterIPs"], json!(["None"]));
    }
}
