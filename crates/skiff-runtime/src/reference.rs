//! Image references, normalised as containerd and docker do (`busybox` is
//! `docker.io/library/busybox:latest`), and the kubelet's `imagePullPolicy` rules.

use std::fmt;
use std::str::FromStr;

use oci_client::{ParseError, Reference};

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {source}")]
pub struct ReferenceError {
    /// What was given.
    pub reference: String,
    #[source]
    pub source: ParseError,
}

/// A normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses and normalises `s` (`busybox` → `docker.io/library/busybox:latest`,
    /// `index.docker.io/x` → `docker.io/x:latest`, `host:5000/x@sha256:…` stays untagged).
    ///
    /// The grammar is the distribution project's (docker, containerd), checked by hand rather
    /// than through `oci_client::Reference`'s parser: that one compiles a regular expression
    /// whose tag part (`[\w][\w.-]{0,127}`, Unicode `\w` in Rust) is 127 copies of the
    /// Unicode word class, tens of megabytes of memory on first use, for a grammar that is ASCII
    /// (Go's `\w`). This is the same language, ASCII as docker means it.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let s = s.trim();
        let err = |source| ReferenceError {
            reference: s.to_string(),
            source,
        };
        let (registry, repository, tag, digest) = split_reference(s).map_err(err)?;
        Ok(Self {
            inner: rebuild(&registry, &repository, tag, digest),
        })
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

/// `[domain/]path[:tag][@digest]`, checked and normalised: (registry, repository, tag, digest).
fn split_reference(s: &str) -> Result<(String, String, Option<String>, Option<String>), ParseError> {
    if s.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A tag follows the last ':' that has no '/' after it (a ':' before one is a port).
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let mut chars = t.chars();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let ok = chars.next().is_some_and(word) && chars.all(|c| word(c) || c == '.' || c == '-') && t.len() <= 128;
        if !ok {
            return Err(ParseError::TagInvalidFormat);
        }
    }
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A first component is a registry when it looks like a host: a dot, a port, localhost.
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), path),
        _ => (None, name),
    };
    if let Some(d) = domain {
        check_domain(d)?;
    }
    if path.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    for component in path.split('/') {
        if !path_component(component) {
            return Err(if path_component(&component.to_ascii_lowercase()) {
                ParseError::NameContainsUppercase
            } else {
                ParseError::ReferenceInvalidFormat
            });
        }
    }
    if name.len() > 255 {
        return Err(ParseError::NameTooLong);
    }
    let registry = match domain {
        None | Some("index.docker.io" | "registry-1.docker.io") => "docker.io",
        Some(d) => d,
    };
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let tag = match (tag, digest) {
        (None, None) => Some("latest".to_string()),
        (t, _) => t.map(str::to_string),
    };
    Ok((registry.to_string(), repository, tag, digest.map(str::to_string)))
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or any number of `-`.
fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host dot-separated labels of letters, digits and inner hyphens.
fn check_domain(d: &str) -> Result<(), ParseError> {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(ParseError::ReferenceInvalidFormat)
    }
}

/// `algorithm:hex`, of an algorithm registries serve (sha256, sha384, sha512) at its length.
fn check_digest(d: &str) -> Result<(), ParseError> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(ParseError::ReferenceInvalidFormat);
    };
    let component = |c: &str| {
        c.chars().next().is_some_and(|x| x.is_ascii_alphabetic()) && c.bytes().all(|x| x.is_ascii_alphanumeric())
    };
    if !algorithm.split(['-', '_', '+', '.']).all(component)
        || hex.len() < 32
        || !hex.bytes().all(|x| x.is_ascii_hexdigit())
    {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    if hex.len() == want {
        Ok(())
    } else {
        Err(ParseError::DigestInvalidLength)
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
        let why = |s: &str| ImageRef::parse(s).expect_err(s).source.to_string();
        assert!(ImageRef::parse("").is_err());
        assert_eq!(why("library/UPPER"), "repository name must be lowercase");
        assert_eq!(why("Foo/bar"), "repository name must be lowercase");
        assert!(ImageRef::parse("x@sha256:abc").is_err());
        assert!(ImageRef::parse("a b").is_err());
        // Tags are ASCII (Go's \w), at most 128 characters, not starting with . or -.
        assert_eq!(why("x:t\u{e4}g"), "invalid tag format");
        assert_eq!(why("x:.t"), "invalid tag format");
        assert_eq!(why(&format!("x:{}", "a".repeat(129))), "invalid tag format");
        assert!(ImageRef::parse(&format!("x:{}", "a".repeat(128))).is_ok());
        for bad in [
            "x/",
            "/x",
            "x//y",
            "x-/y",
            "x..y",
            "x___y",
            "-x",
            "host:port/x",
            "ho_st.io/x",
            "x:",
            "x@",
            "@sha256:0",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(why(&format!("x@md5:{hex}")), "unsupported digest algorithm");
        assert_eq!(why(&format!("x@sha512:{hex}")), "invalid checksum digest length");
        assert_eq!(
            why(&format!("{}:1", "a".repeat(256))),
            "repository name must not be more than 255 characters"
        );
    }

    /// The hand-written grammar accepts and normalises what oci-client's parser does, for
    /// ASCII references (oci-client's compiled expression is fine in a test).
    #[test]
    fn agrees_with_oci_client() {
        let hex = "0123456789abcdef".repeat(4);
        let cases = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "library/busybox:latest".into(),
            "a/b/c/d:v1.2-rc_3".into(),
            "team/my-app__x.y-z--w:TAG".into(),
            "localhost/x".into(),
            "localhost:5000/x/y:1".into(),
            "127.0.0.1:5000/busybox".into(),
            "Registry.Example.COM/team/app:1".into(),
            "quay.io/x".into(),
            "index.docker.io/library/nginx".into(),
            format!("ghcr.io/o/r@sha256:{hex}"),
            format!("ghcr.io/o/r:v1@sha256:{hex}"),
            "x:_".into(),
        ];
        for c in cases {
            let ours = ImageRef::parse(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
            let theirs = Reference::try_from(c.as_str()).expect("oci-client parses it");
            assert_eq!(ours.registry(), theirs.registry(), "{c}");
            assert_eq!(ours.repository(), theirs.repository(), "{c}");
            assert_eq!(ours.tag(), theirs.tag(), "{c}");
            assert_eq!(ours.digest(), theirs.digest(), "{c}");
        }
        for bad in ["UPPER", "x@sha256:abc", "a b", "x:-t", "x/y:a:b"] {
            assert!(
                ImageRef::parse(bad).is_err() && Reference::try_from(bad).is_err(),
                "{bad}"
            );
        }
        // Where the two differ, ours is docker's: a first component with a dot is a registry
        // and must be a host name (oci-client takes `my_app.v2` for one).
        assert!(ImageRef::parse("my_app.v2/x").is_err());
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
