//! The live set of served resource types: the built-ins plus what CustomResourceDefinitions
//! add. Rebuilt from the cache whenever a CRD changes.

use std::sync::{Arc, RwLock};

use skiff_api::ResourceType;

pub struct Types {
    builtin: Vec<Arc<ResourceType>>,
    all: RwLock<Arc<Vec<Arc<ResourceType>>>>,
}

impl Types {
    pub fn new() -> Self {
        let builtin = skiff_api::builtin_types();
        Types {
            all: RwLock::new(Arc::new(builtin.clone())),
            builtin,
        }
    }

    pub fn all(&self) -> Arc<Vec<Arc<ResourceType>>> {
        self.all.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the custom types with those of `crds` (established CRDs only). A CRD whose group
    /// and plural collide with a built-in is ignored.
    pub fn set_custom(&self, crds: &[Arc<serde_json::Value>]) {
        let mut all = self.builtin.clone();
        for crd in crds {
            for t in skiff_api::custom_types(crd) {
                if !all
                    .iter()
                    .any(|b| b.group == t.group && b.version == t.version && b.plural == t.plural)
                {
                    all.push(t);
                }
            }
        }
        *self.all.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(all);
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.all()
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The preferred type with this group and kind (to resolve an object's type from its key).
    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceType>> {
        let all = self.all();
        all.iter()
            .find(|t| t.storage == storage && t.preferred)
            .or_else(|| all.iter().find(|t| t.storage == storage))
            .cloned()
    }

    /// Every distinct storage prefix (`/registry/<storage>/`) of namespaced types.
    pub fn namespaced_storages(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .all()
            .iter()
            .filter(|t| t.namespaced)
            .map(|t| t.storage.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Default for Types {
    fn default() -> Self {
        Self::new()
    }
}
