//! Service ClusterIP and NodePort allocation. Each allocated IP or port is a key in the store
//! (`/skiff/allocations/...`), created with the store's create-if-absent, so two
//! concurrent Service creates can never get the same one. Released when the Service goes.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use skiff_api::{FieldError, ResourceType};
use skiff_store::{Store, StoreError};

use crate::error::{ApiError, ApiResult};

/// Service CIDR 10.43.0.0/16; .0 is the network, .1 the `kubernetes` service.
const SERVICE_NET: u32 = u32::from_be_bytes([10, 43, 0, 0]);
const SERVICE_SIZE: u32 = 1 << 16;
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

fn ip_key(ip: &str) -> String {
    format!("/skiff/allocations/clusterips/{ip}")
}

fn port_key(port: i64) -> String {
    format!("/skiff/allocations/nodeports/{port}")
}

fn in_range(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>().is_ok_and(|a| {
        let n = u32::from(a);
        n & !(SERVICE_SIZE - 1) == SERVICE_NET && n != SERVICE_NET && n != SERVICE_NET + SERVICE_SIZE - 1
    })
}

async fn claim(store: &dyn Store, key: &str, owner: &str) -> Result<bool, StoreError> {
    match store.create(key, bytes::Bytes::from(owner.to_string())).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What one Service holds, to release on failure or deletion.
#[derive(Default, Debug)]
pub struct Held(Vec<String>);

impl Held {
    pub async fn release(self, store: &dyn Store) {
        for k in self.0 {
            let _ = store.delete(&k, None).await;
        }
    }
}

/// Allocate what a Service needs: a ClusterIP (unless headless or ExternalName) and a NodePort
/// for each port of a NodePort/LoadBalancer Service. `old` is the stored Service on update.
pub async fn allocate(store: &dyn Store, rt: &ResourceType, svc: &mut Value, old: Option<&Value>) -> ApiResult<Held> {
    let mut held = Held::default();
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let owner = format!("{}/{}", svc["metadata"]["namespace"].as_str().unwrap_or(""), name);
    let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
    let result = async {
        if ty != "ExternalName" {
            let wanted = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            let had = old
                .and_then(|o| o["spec"]["clusterIP"].as_str())
                .unwrap_or("")
                .to_string();
            if wanted == "None" {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            } else if !wanted.is_empty() && wanted == had {
                // Kept from before.
            } else if !wanted.is_empty() {
                if !in_range(&wanted) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        &[FieldError::invalid(
                            "spec.clusterIPs",
                            wanted.clone(),
                            "provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
                        )],
                    ));
                }
                if !claim(store, &ip_key(&wanted), &owner).await? {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        &[FieldError::invalid(
                            "spec.clusterIPs",
                            wanted.clone(),
                            "failed to allocate IP: provided IP is already allocated",
                        )],
                    ));
                }
                held.0.push(ip_key(&wanted));
                svc["spec"]["clusterIPs"] = json!([wanted]);
            } else {
                let mut got = None;
                for _ in 0..64 {
                    let n = SERVICE_NET + 2 + rand::random::<u32>() % (SERVICE_SIZE - 3);
                    let ip = Ipv4Addr::from(n).to_string();
                    if claim(store, &ip_key(&ip), &owner).await? {
                        got = Some(ip);
                        break;
                    }
                }
                let ip = got.ok_or_else(|| {
                    ApiError::new(
                        500,
                        "InternalError",
                        "Internal error occurred: failed to allocate a serviceIP: range is full",
                    )
                })?;
                held.0.push(ip_key(&ip));
                svc["spec"]["clusterIP"] = json!(ip);
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let old_ports: Vec<i64> = old
                .and_then(|o| o["spec"]["ports"].as_array())
                .map(|ps| ps.iter().filter_map(|p| p["nodePort"].as_i64()).collect())
                .unwrap_or_default();
            let n = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
            for i in 0..n {
                let current = svc["spec"]["ports"][i]["nodePort"].as_i64().filter(|p| *p != 0);
                match current {
                    Some(p) if old_ports.contains(&p) => {}
                    Some(p) => {
                        if !NODE_PORTS.contains(&p) {
                            return Err(ApiError::invalid(
                                rt,
                                &name,
                                &[FieldError::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    p,
                                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                                )],
                            ));
                        }
                        if !claim(store, &port_key(p), &owner).await? {
                            return Err(ApiError::invalid(
                                rt,
                                &name,
                                &[FieldError::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    p,
                                    "provided port is already allocated",
                                )],
                            ));
                        }
                        held.0.push(port_key(p));
                    }
                    None => {
                        let mut got = None;
                        for _ in 0..256 {
                            let p = 30000 + i64::from(rand::random::<u16>() % 2768);
                            if claim(store, &port_key(p), &owner).await? {
                                got = Some(p);
                                break;
                            }
                        }
                        let p = got.ok_or_else(|| {
                            ApiError::new(
                                500,
                                "InternalError",
                                "Internal error occurred: failed to allocate a nodePort: range is full",
                            )
                        })?;
                        held.0.push(port_key(p));
                        svc["spec"]["ports"][i]["nodePort"] = json!(p);
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(held),
        Err(e) => {
            held.release(store).await;
            Err(e)
        }
    }
}

/// Release what a deleted Service held.
pub async fn release(store: &dyn Store, svc: &Value) {
    let mut held = Held::default();
    if let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|ip| in_range(ip)) {
        held.0.push(ip_key(ip));
    }
    for p in svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
    {
        held.0.push(port_key(p));
    }
    held.release(store).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_check() {
        assert!(in_range("10.43.12.7"));
        assert!(!in_range("10.43.0.0"));
        assert!(!in_range("10.44.0.5"));
        assert!(!in_range("nonsense"));
    }
}
