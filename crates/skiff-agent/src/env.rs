//! A container's environment as the kubelet builds it: `envFrom` (config maps and secrets,
//! with prefixes), then `env` with `value` and `valueFrom` (field references, resource
//! references, config map and secret keys). `$(VAR)` references are expanded by the bundle.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Client, ResourceExt};

async fn config_map(client: &Client, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
    crate::volumes::fetch(client, ns, "configmap", name).await
}

async fn secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, String> {
    crate::volumes::fetch(client, ns, "secret", name).await
}

fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// The value of a `fieldRef` path.
pub fn field_value(pod: &Pod, path: &str, node_ip: IpAddr, pod_ip: Option<IpAddr>) -> Result<String, String> {
    let spec = pod.spec.as_ref();
    let sub = |prefix: &str| path.strip_prefix(prefix).and_then(|r| r.strip_suffix("']"));
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => node_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.map(|i| i.to_string()).unwrap_or_default(),
        _ => {
            if let Some(k) = sub("metadata.labels['") {
                pod.labels().get(k).cloned().unwrap_or_default()
            } else if let Some(k) = sub("metadata.annotations['") {
                pod.annotations().get(k).cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    })
}

/// The container's env, resolved; an error is the `CreateContainerConfigError` message.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    c: &Container,
    node_ip: IpAddr,
    pod_ip: Option<IpAddr>,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| match out.iter_mut().find(|(n, _)| *n == k) {
        Some(e) => e.1 = v,
        None => out.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, &ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, &ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => e.value.clone().unwrap_or_default(),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, node_ip, pod_ip)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let cm = config_map(client, &ns, &r.name).await?;
                    match cm.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned())) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("couldn't find key {} in ConfigMap {}/{}", r.key, ns, r.name)),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let s = secret(client, &ns, &r.name).await?;
                    match s.and_then(|s| secret_text(&s, &r.key)) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("couldn't find key {} in Secret {}/{}", r.key, ns, r.name)),
                    }
                } else if let Some(r) = &from.resource_field_ref {
                    resource_value(c, &r.resource)?
                } else {
                    return Err(format!("env {:?}: valueFrom names no source", e.name));
                }
            }
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

/// `resourceFieldRef` with the default divisor: CPU in whole cores (rounded up), memory in bytes.
fn resource_value(c: &Container, resource: &str) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resourceFieldRef {resource:?}"))?;
    let res = c.resources.as_ref();
    let q = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(name)),
        "requests" => res.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(name)),
        _ => return Err(format!("unsupported resourceFieldRef {resource:?}")),
    };
    let Some(q) = q else {
        // Unset limits report the node's allocatable; unset requests 0.
        return Ok(if kind == "limits" && name == "cpu" {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string()
        } else {
            "0".into()
        });
    };
    match name {
        "cpu" => skiff_runtime::quantity::milli_value(&q.0)
            .map(|m| ((m + 999) / 1000).to_string())
            .ok_or_else(|| format!("invalid cpu quantity {:?}", q.0)),
        _ => skiff_runtime::quantity::value(&q.0)
            .map(|b| b.to_string())
            .ok_or_else(|| format!("invalid quantity {:?}", q.0)),
    }
}
