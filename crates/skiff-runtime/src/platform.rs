//! Platforms (`linux/amd64`, `linux/arm64/v8`) and choosing a manifest from an index.

use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex};

/// An OS/architecture/variant triple, normalised as containerd does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, …
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on (`std::env::consts` mapped to OCI names).
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let os = it.next().filter(|x| !x.is_empty())?;
        let arch = it.next().filter(|x| !x.is_empty())?;
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        let (arch, variant) = normalise_arch(arch, variant);
        Some(Self {
            os: os.to_ascii_lowercase(),
            architecture: arch,
            variant,
        })
    }

    /// Whether a manifest for `os/arch/variant` runs here. A missing variant in the index
    /// matches (as containerd's matcher does); a different one does not.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let (arch, variant) = normalise_arch(arch, variant.map(str::to_string));
        if !os.eq_ignore_ascii_case(&self.os) || arch != self.architecture {
            return false;
        }
        match (&self.variant, &variant) {
            (_, None) => true,
            (Some(w), Some(v)) => w == v,
            (None, Some(_)) => false,
        }
    }

    /// The index entry for this platform: an exact variant match first, then one without a
    /// variant.
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        let candidates: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    self.matches(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    )
                })
            })
            .collect();
        candidates
            .iter()
            .find(|d| d.platform().as_ref().and_then(|p| p.variant().clone()) == self.variant)
            .or_else(|| candidates.first())
            .copied()
    }
}

fn normalise_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    match arch.as_str() {
        "x86_64" | "x86-64" => ("amd64".into(), None),
        "i386" => ("386".into(), None),
        "aarch64" | "arm64" => ("arm64".into(), variant.filter(|v| v != "8").or(Some("v8".into()))),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        _ => (arch, variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>, char)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(os, arch, variant, c)| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", c.to_string().repeat(64)),
                    "size": 1,
                    "platform": p,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests})).expect("index")
    }

    #[test]
    fn picks_the_host_platform() {
        let idx = index(&[
            ("linux", "arm", Some("v7"), 'a'),
            ("linux", "arm64", Some("v8"), 'b'),
            ("linux", "amd64", None, 'c'),
            ("windows", "amd64", None, 'd'),
        ]);
        let pick = |p: &str| {
            Platform::parse(p)
                .expect("platform")
                .select(&idx)
                .map(|d| d.digest().to_string().chars().last().expect("digit"))
        };
        assert_eq!(pick("linux/amd64"), Some('c'));
        assert_eq!(pick("linux/arm64"), Some('b'));
        assert_eq!(pick("linux/aarch64"), Some('b'));
        assert_eq!(pick("linux/arm/v7"), Some('a'));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("linux/s390x"), None);
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }
}
