//! Admission: what the server changes and checks in an object being created, after decoding
//! and before defaulting and validation (upstream's mutating admission, which runs at the same
//! point). One plugin so far, upstream's `ServiceAccount` (pods):
//!
//! - a pod without `serviceAccountName` runs as `default`;
//! - a pod whose service account does not exist is refused (`403`);
//! - unless `automountServiceAccountToken` is false (the pod's setting wins over the
//!   account's), the pod gets the `kube-api-access-<suffix>` projected volume — a bound token,
//!   the cluster CA (`kube-root-ca.crt`) and the namespace — mounted read-only at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init container
//!   that mounts nothing there;
//! - a pod without `imagePullSecrets` gets its service account's.
//!
//! Mirror pods are not changed, and may not name a service account or secrets. Not done:
//! the `kubernetes.io/enforce-mountable-secrets` annotation.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cache::Cache;
use crate::error::{ApiError, ApiResult};
use crate::service_account_token::WARN_ONLY_EXPIRATION;
use crate::types::Types;

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The `default` account is made by a controller just after its namespace: a pod created in
/// that moment waits for it this long (upstream retries its lookup for up to 2 s).
const DEFAULT_ACCOUNT_WAIT: Duration = Duration::from_secs(5);

fn forbidden(pod_name: &str, why: &str) -> ApiError {
    let message = if pod_name.is_empty() {
        format!("pods is forbidden: {why}")
    } else {
        format!("pods \"{pod_name}\" is forbidden: {why}")
    };
    ApiError::forbidden(message).with_details(json!({"name": pod_name, "kind": "pods"}))
}

/// The projected volume that carries a pod's API credentials (upstream's `TokenVolumeSource`).
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": WARN_ONLY_EXPIRATION, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

/// The ServiceAccount plugin on a pod being created in `ns`. `suffix` names a new token
/// volume (`kube-api-access-<suffix>`).
pub async fn service_account(
    cache: &Cache,
    types: &Types,
    ns: &str,
    pod: &mut Value,
    suffix: impl FnOnce() -> String,
) -> ApiResult<()> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    if pod["metadata"]["annotations"].get(MIRROR_ANNOTATION).is_some() {
        return check_mirror_pod(&pod_name, &pod["spec"]);
    }
    if !pod["spec"].is_object() {
        pod["spec"] = json!({});
    }
    let spec = &mut pod["spec"];
    let account = match spec["serviceAccountName"].as_str().filter(|s| !s.is_empty()) {
        Some(a) => a.to_string(),
        // The deprecated alias, as the v1 → internal conversion reads it.
        None => match spec["serviceAccount"].as_str().filter(|s| !s.is_empty()) {
            Some(a) => a.to_string(),
            None => DEFAULT_SERVICE_ACCOUNT.to_string(),
        },
    };
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);

    let Some(sa) = find_account(cache, types, ns, &account).await else {
        return Err(forbidden(
            &pod_name,
            &format!("error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"),
        ));
    };
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec, suffix);
    }
    let has_pull_secrets = spec["imagePullSecrets"].as_array().is_some_and(|a| !a.is_empty());
    if !has_pull_secrets {
        if let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty()) {
            let names: Vec<Value> = secrets.iter().map(|s| json!({"name": s["name"]})).collect();
            spec["imagePullSecrets"] = json!(names);
        }
    }
    Ok(())
}

/// The account, from the cache; `default` is waited for a moment (see `DEFAULT_ACCOUNT_WAIT`).
async fn find_account(cache: &Cache, types: &Types, ns: &str, name: &str) -> Option<Value> {
    let key = types.find("", "v1", "serviceaccounts")?.key(Some(ns), name);
    let deadline = tokio::time::Instant::now() + DEFAULT_ACCOUNT_WAIT;
    loop {
        if let Some(sa) = cache.get(&key) {
            return Some(sa.value());
        }
        if name != DEFAULT_SERVICE_ACCOUNT || tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Add the token volume (unless one is there) and mount it in every container that has
/// nothing at the mount path.
fn mount_token(spec: &mut Value, suffix: impl FnOnce() -> String) {
    let existing = spec["volumes"].as_array().and_then(|vs| {
        vs.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
            .map(str::to_string)
    });
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{}", suffix()));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec[list].as_array_mut() else {
            continue;
        };
        for c in cs.iter_mut().filter(|c| c.is_object()) {
            let mounted = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if mounted {
                continue;
            }
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needed = true;
        }
    }
    if needed && existing.is_none() {
        match spec["volumes"].as_array_mut() {
            Some(vs) => vs.push(token_volume(&name)),
            None => spec["volumes"] = json!([token_volume(&name)]),
        }
    }
}

/// Mirror pods (a kubelet's static pods) may not reference service accounts or secrets.
fn check_mirror_pod(pod_name: &str, spec: &Value) -> ApiResult<()> {
    if spec["serviceAccountName"].as_str().is_some_and(|s| !s.is_empty()) {
        return Err(forbidden(pod_name, "a mirror pod may not reference service accounts"));
    }
    let volumes = spec["volumes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let sources = || {
        volumes.iter().flat_map(|v| {
            v["projected"]["sources"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
        })
    };
    let containers = || {
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(|l| spec[l].as_array().map(Vec::as_slice).unwrap_or_default())
    };
    let secrets = volumes.iter().any(|v| v["secret"].is_object())
        || sources().any(|s| s["secret"].is_object())
        || spec["imagePullSecrets"].as_array().is_some_and(|a| !a.is_empty())
        || containers().any(|c| {
            c["envFrom"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["secretRef"].is_object()))
                || c["env"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|e| e["valueFrom"]["secretKeyRef"].is_object()))
        });
    if secrets {
        return Err(forbidden(pod_name, "a mirror pod may not reference secrets"));
    }
    if sources().any(|s| s["serviceAccountToken"].is_object()) {
        return Err(forbidden(
            pod_name,
            "a mirror pod may not use ServiceAccountToken volume projections",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_in_every_container_without_a_mount_there() {
        let mut spec = json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
            "volumes": [{"name": "x", "emptyDir": {}}, {"name": "own", "emptyDir": {}}],
        });
        mount_token(&mut spec, || "abcde".into());
        let mount = json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().map(Vec::len), Some(1));
        assert_eq!(spec["volumes"][2], token_volume("kube-api-access-abcde"));

        // A pod that already has a token volume keeps it (no second one).
        let mut spec = json!({
            "containers": [{"name": "a"}],
            "volumes": [{"name": "kube-api-access-zzzzz", "emptyDir": {}}],
        });
        mount_token(&mut spec, || "abcde".into());
        assert_eq!(spec["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-zzzzz"
        );

        // Nothing to mount into: no volume either.
        let mut spec =
            json!({"containers": [{"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}]});
        mount_token(&mut spec, || "abcde".into());
        assert!(spec["volumes"].is_null());
    }

    #[test]
    fn mirror_pods_may_not_reference_accounts_or_secrets() {
        assert!(check_mirror_pod("m", &json!({"containers": [{"name": "a"}]})).is_ok());
        let e = check_mirror_pod("m", &json!({"serviceAccountName": "x"})).expect_err("account");
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                403,
                "pods \"m\" is forbidden: a mirror pod may not reference service accounts"
            )
        );
        let e = check_mirror_pod(
            "m",
            &json!({"containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}),
        )
        .expect_err("secret");
        assert!(e.message.ends_with("a mirror pod may not reference secrets"));
        let e = check_mirror_pod("m", &json!({"volumes": [token_volume("kube-api-access-x")]})).expect_err("token");
        assert!(e
            .message
            .ends_with("may not use ServiceAccountToken volume projections"));
    }
}
