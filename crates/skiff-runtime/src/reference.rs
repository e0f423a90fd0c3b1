//! Image references, normalised as containerd and docker do (`busybox` is
//! `docker.io/library/busybox:latest`), and the kubelet's `imagePullPolicy` rules.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {source}")]
pub struct ReferenceError {
    /// What was given.
    pub reference: String,
    #[source]
    pub source: oci_client::ParseError,
}

/// A normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses and normalises `s` (`busybox` → `docker.io/library/busybox:latest`,
    /// `index.docker.io/x` → `docker.io/x:latest`, `host:5000/x@sha256:…` stays untagged).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let s = s.trim();
        let inner = Reference::try_from(s).map_err(|source| ReferenceError {
            reference: s.to_string(),
            source,
        })?;
        // `index.docker.io` and `registry-1.docker.io` are docker.io by another name.
        let inner = match inner.registry() {
            "index.docker.io" | "registry-1.docker.io" => {
                let repo = if inner.repository().contains('/') {
                    inner.repository().to_string()
                } else {
                    format!("library/{}", inner.repository())
                };
                rebuild(
                    "docker.io",
                    &repo,
                    inner.tag().map(str::to_string),
                    inner.digest().map(str::to_string),
                )
            }
            _ => inner,
        };
        Ok(Self { inner })
    }

    /// Builds a reference from parts (used when a mirror rewrites the repository).
    pub(crate) fn with_repository(&self, repository: &str) -> Reference {
        rebuild(
            self.registry(),
            repository,
            self.tag().map(str::to_string),
            self.digest().map(str::to_string),
        )
    }

    /// The same image pinned to `digest` (keeps the registry and repository, drops the tag).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            inner: Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        }
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`, the name an image is listed under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The oci-client reference.
    pub(crate) fn as_oci(&self) -> &Reference {
        &self.inner
    }
}

fn rebuild(registry: &str, repository: &str, tag: Option<String>, digest: Option<String>) -> Reference {
    match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry.to_string(), repository.to_string(), t, d),
        (None, Some(d)) => Reference::with_digest(registry.to_string(), repository.to_string(), d),
        (Some(t), None) => Reference::with_tag(registry.to_string(), repository.to_string(), t),
        (None, None) => Reference::with_tag(registry.to_string(), repository.to_string(), "latest".into()),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.whole())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A container's `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time (a pull of an unchanged image only fetches its manifest).
    Always,
    /// Pull only when the image is not present.
    IfNotPresent,
    /// Never pull; fail when the image is not present.
    Never,
}

/// The image is absent and the policy forbids pulling (the kubelet's `ErrImageNeverPull`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("container image {image:?} is not present with pull policy of Never")]
pub struct NeverPullError {
    /// The image asked for.
    pub image: String,
}

impl PullPolicy {
    /// Parses the Kubernetes spelling; `None` for an empty or unknown value.
    pub fn from_k8s(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(Self::Always),
            "IfNotPresent" => Some(Self::IfNotPresent),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }

    /// The API server's default when a container gives none: `Always` for `:latest` or an
    /// image without a tag, `IfNotPresent` otherwise (a digest counts as a tag here, as in
    /// Kubernetes). Takes the image string as written in the pod, before normalisation.
    pub fn default_for(image: &str) -> Self {
        // Strip the digest, then look for a tag after the last '/'.
        let without_digest = image.split('@').next().unwrap_or(image);
        let has_digest = image.contains('@');
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        match last.split_once(':') {
            Some((_, "latest")) => Self::Always,
            Some(_) => Self::IfNotPresent,
            None if has_digest => Self::IfNotPresent,
            None => Self::Always,
        }
    }

    /// Whether to pull, given whether the image is already present.
    pub fn should_pull(self, image: &str, present: bool) -> Result<bool, NeverPullError> {
        match self {
            Self::Always => Ok(true),
            Self::IfNotPresent => Ok(!present),
            Self::Never if present => Ok(false),
            Self::Never => Err(NeverPullError {
                image: image.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).expect("valid reference").to_string()
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("rancher/pause:3.6"), "docker.io/rancher/pause:3.6");
        assert_eq!(norm("index.docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("registry.local:5000/x/y:v1"), "registry.local:5000/x/y:v1");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let r = ImageRef::parse(&format!("registry.local:5000/x/y@{d}")).expect("digest ref");
        assert_eq!(r.registry(), "registry.local:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d));
        assert_eq!(r.name(), "registry.local:5000/x/y");
        let r = ImageRef::parse(&format!("busybox:1.36@{d}")).expect("tag and digest");
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1.36@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("library/UPPER").is_err());
        assert!(ImageRef::parse("x@sha256:abc").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }

    #[test]
    fn default_pull_policy() {
        assert_eq!(PullPolicy::default_for("busybox"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("busybox:latest"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("busybox:1.36"), PullPolicy::IfNotPresent);
        assert_eq!(
            PullPolicy::default_for("registry.local:5000/busybox"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for("registry.local:5000/busybox:1.0"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::default_for("busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            PullPolicy::IfNotPresent
        );
    }

    #[test]
    fn pull_decisions() {
        assert_eq!(PullPolicy::Always.should_pull("x", true), Ok(true));
        assert_eq!(PullPolicy::IfNotPresent.should_pull("x", true), Ok(false));
        assert_eq!(PullPolicy::IfNotPresent.should_pull("x", false), Ok(true));
        assert_eq!(PullPolicy::Never.should_pull("x", true), Ok(false));
        let err = PullPolicy::Never.should_pull("x", false).expect_err("never + absent");
        assert!(err.to_string().contains("pull policy of Never"));
        assert_eq!(PullPolicy::from_k8s("IfNotPresent"), Some(PullPolicy::IfNotPresent));
        assert_eq!(PullPolicy::from_k8s(""), None);
    }
}
