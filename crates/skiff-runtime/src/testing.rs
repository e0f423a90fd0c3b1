//! Test support (feature `test-support`): a real registry (Debian's `docker-registry`) on
//! loopback, and images built from scratch (layers from busybox-static) that tests push to it
//! or write as docker-archive / OCI-archive tarballs. Not for production use.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::content::Digest;

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// Debian's docker-registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A `docker-registry` process on `127.0.0.1:<port>`; killed on drop.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
    /// Basic-auth credentials the registry requires, if any.
    pub credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry with storage in a temp dir; with `credentials`, it requires them
    /// (htpasswd, bcrypt).
    pub fn start(credentials: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: skiff-test\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = credentials {
            let hash = bcrypt::hash(p, 5).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{u}:{hash}\n")).expect("htpasswd");
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("config");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            addr,
            child,
            _dir: dir,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    fn client(&self) -> (oci_client::Client, RegistryAuth) {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match &self.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        (client, auth)
    }

    /// A client that may push to `repo`, and the reference `repo:tag`.
    async fn pusher(&self, repo: &str, tag: &str) -> (oci_client::Client, oci_client::Reference) {
        let (client, auth) = self.client();
        let r = oci_client::Reference::with_tag(self.addr.clone(), repo.to_string(), tag.to_string());
        client.store_auth_if_needed(&self.addr, &auth).await;
        client
            .auth(&r, &auth, oci_client::RegistryOperation::Push)
            .await
            .expect("registry auth");
        (client, r)
    }

    /// Pushes `image`'s blobs and then its manifest as `r`.
    async fn push_image(client: &oci_client::Client, r: &oci_client::Reference, image: &TestImage) {
        for (digest, data) in &image.blobs {
            client
                .push_blob(r, data.clone(), digest.as_str())
                .await
                .expect("push blob");
        }
        let ct = http::HeaderValue::from_static(image.media_type);
        client
            .push_manifest_raw(r, image.manifest.clone(), ct)
            .await
            .expect("push manifest");
    }

    /// Pushes `image`'s blobs and manifest as `repo:tag`.
    pub async fn push(&self, repo: &str, tag: &str, image: &TestImage) {
        let (client, r) = self.pusher(repo, tag).await;
        Self::push_image(&client, &r, image).await;
    }

    /// Pushes every image of `index` by digest and then the index as `repo:tag`.
    pub async fn push_index(&self, repo: &str, tag: &str, index: &TestIndex) {
        let (client, r) = self.pusher(repo, tag).await;
        for img in &index.images {
            Self::push_image(&client, &r.clone_with_digest(img.digest.to_string()), img).await;
        }
        client
            .push_manifest_raw(
                &r,
                index.manifest.clone(),
                http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
            )
            .await
            .expect("push index");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Manifest flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest.
    Oci,
    /// Docker image manifest v2, schema 2.
    Docker,
}

/// An image built in memory.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Its media type.
    pub media_type: &'static str,
    /// Its digest.
    pub digest: Digest,
    /// The config (digest, bytes).
    pub config: (Digest, Vec<u8>),
    /// Layer blobs as stored in the registry, bottom first, with their uncompressed tars.
    pub layers: Vec<(Digest, Vec<u8>, Vec<u8>)>,
    /// Every blob: config and layers.
    pub blobs: Vec<(Digest, Vec<u8>)>,
    /// Architecture in the config.
    pub architecture: String,
}

/// A multi-platform index.
#[derive(Clone, Debug)]
pub struct TestIndex {
    /// Index bytes.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// The platform images.
    pub images: Vec<TestImage>,
}

/// Builds a layer tar with `f`.
pub fn layer(f: impl FnOnce(&mut LayerBuilder)) -> Vec<u8> {
    let mut b = LayerBuilder {
        tar: tar::Builder::new(Vec::new()),
    };
    f(&mut b);
    b.tar.into_inner().expect("tar")
}

/// Adds entries to a layer.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }
    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar.append_data(&mut h, path, std::io::empty()).expect("dir");
        self
    }
    /// A regular file.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data).expect("file");
        self
    }
    /// A regular file owned by `uid:gid`.
    pub fn file_owned(&mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar.append_data(&mut h, path, data).expect("file");
        self
    }
    /// A symlink.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target).expect("symlink");
        self
    }
    /// A hard link to `target` (a path in the layer).
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.tar.append_link(&mut h, path, target).expect("hardlink");
        self
    }
    /// A whiteout hiding `path` of lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let p = Path::new(path);
        let name = p.file_name().expect("name").to_string_lossy();
        let wh = p.with_file_name(format!(".wh.{name}"));
        self.file(wh.to_str().expect("utf8"), b"", 0o644)
    }
    /// An opaque whiteout: `dir`'s lower content is hidden.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"", 0o644)
    }
    /// A regular file whose name is written to the header as is (`../x` included), as a
    /// hostile archive would.
    pub fn raw_file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_old();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.tar.append(&h, data).expect("raw entry");
        self
    }
    /// The busybox-static binary at `path`.
    pub fn busybox(&mut self, path: &str) -> &mut Self {
        let data = std::fs::read(BUSYBOX).expect("busybox-static (apt-get install busybox-static)");
        self.file(path, &data, 0o755)
    }
}

/// Compresses a layer tar.
pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
    }
}

fn layer_media_type(kind: ManifestKind, c: Compression) -> &'static str {
    match (kind, c) {
        (ManifestKind::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        (ManifestKind::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (ManifestKind::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (ManifestKind::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
        (ManifestKind::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (ManifestKind::Docker, Compression::Zstd) => panic!("docker manifests have no zstd layers"),
    }
}

/// Builds an image from layer tars.
pub fn image(kind: ManifestKind, architecture: &str, layers: &[(Vec<u8>, Compression)]) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|(t, _)| Digest::of(t).to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config");
    let config_digest = Digest::of(&config);
    let mut blobs = vec![(config_digest.clone(), config.clone())];
    let mut layer_descs = Vec::new();
    let mut out_layers = Vec::new();
    for (t, c) in layers {
        let blob = compress(t, *c);
        let d = Digest::of(&blob);
        layer_descs.push(serde_json::json!({
            "mediaType": layer_media_type(kind, *c),
            "size": blob.len(),
            "digest": d.as_str(),
        }));
        blobs.push((d.clone(), blob.clone()));
        out_layers.push((d, blob, t.clone()));
    }
    let (media_type, config_type) = match kind {
        ManifestKind::Oci => (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        ),
        ManifestKind::Docker => (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        ),
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest.as_str()},
        "layers": layer_descs,
    }))
    .expect("manifest");
    TestImage {
        digest: Digest::of(&manifest),
        manifest,
        media_type,
        config: (config_digest, config),
        layers: out_layers,
        blobs,
        architecture: architecture.to_string(),
    }
}

/// An OCI index over `images` (one per architecture, linux).
pub fn index(images: Vec<TestImage>) -> TestIndex {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            let mut platform = serde_json::json!({"os": "linux", "architecture": i.architecture});
            if i.architecture == "arm64" {
                platform["variant"] = serde_json::json!("v8");
            }
            serde_json::json!({
                "mediaType": i.media_type,
                "size": i.manifest.len(),
                "digest": i.digest.as_str(),
                "platform": platform,
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("index");
    TestIndex {
        digest: Digest::of(&manifest),
        manifest,
        images,
    }
}

/// A small busybox image: `bin/busybox` with `sh`/`ls` symlinks, `/etc/motd`.
pub fn busybox_image(kind: ManifestKind, architecture: &str) -> TestImage {
    let base = layer(|l| {
        l.dir("bin", 0o755)
            .busybox("bin/busybox")
            .symlink("bin/sh", "busybox")
            .symlink("bin/ls", "busybox")
            .dir("etc", 0o755)
            .file("etc/motd", format!("hello from {architecture}\n").as_bytes(), 0o644);
    });
    let c = match kind {
        ManifestKind::Oci => Compression::Zstd,
        ManifestKind::Docker => Compression::Gzip,
    };
    image(kind, architecture, &[(base, c)])
}

/// Writes `images` (with their names) as a `docker save` tarball at `path`.
pub fn write_docker_archive(path: &Path, images: &[(&str, &TestImage)]) {
    let mut t = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let mut repositories = serde_json::Map::new();
    for (name, img) in images {
        let cfg_name = format!("{}.json", img.config.0.hex());
        add(&mut t, &cfg_name, &img.config.1);
        let mut layer_names = Vec::new();
        for (d, _, plain) in &img.layers {
            // docker save writes uncompressed layers under <id>/layer.tar.
            let n = format!("{}/layer.tar", d.hex());
            add(&mut t, &n, plain);
            layer_names.push(n);
        }
        manifest.push(serde_json::json!({"Config": cfg_name, "RepoTags": [name], "Layers": layer_names}));
        let (repo, tag) = name.rsplit_once(':').expect("name:tag");
        let last = layer_names.last().and_then(|l| l.split('/').next()).unwrap_or_default();
        repositories.insert(repo.to_string(), serde_json::json!({ tag: last }));
    }
    add(&mut t, "manifest.json", &serde_json::to_vec(&manifest).expect("json"));
    add(
        &mut t,
        "repositories",
        &serde_json::to_vec(&serde_json::Value::Object(repositories)).expect("json"),
    );
    std::fs::write(path, t.into_inner().expect("tar")).expect("write archive");
}

/// Writes `images` as an OCI image layout tarball at `path`, named by the
/// `org.opencontainers.image.ref.name` annotation (a full reference).
pub fn write_oci_archive(path: &Path, images: &[(&str, &TestImage)]) {
    let mut t = tar::Builder::new(Vec::new());
    add(&mut t, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut manifests = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, img) in images {
        for (d, data) in img
            .blobs
            .iter()
            .chain(std::iter::once(&(img.digest.clone(), img.manifest.clone())))
        {
            if seen.insert(d.clone()) {
                add(&mut t, &format!("blobs/sha256/{}", d.hex()), data);
            }
        }
        manifests.push(serde_json::json!({
            "mediaType": img.media_type,
            "size": img.manifest.len(),
            "digest": img.digest.as_str(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    add(&mut t, "index.json", &serde_json::to_vec(&index).expect("json"));
    std::fs::write(path, t.into_inner().expect("tar")).expect("write archive");
}

/// The image `name` of an OCI-archive tarball (as the repository's image scripts write them),
/// to push to a [`Registry`]. Layers' uncompressed tars are left empty.
pub fn read_oci_archive(path: &Path, name: &str) -> TestImage {
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        let p = entry
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read entry");
        files.insert(p, data);
    }
    let json = |p: &str| -> serde_json::Value { serde_json::from_slice(&files[p]).expect("json") };
    let blob = |d: &str| -> Vec<u8> {
        files
            .get(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
            .cloned()
            .unwrap_or_else(|| panic!("blob {d} in {}", path.display()))
    };
    let index = json("index.json");
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} in {}", path.display()));
    let digest = entry["digest"].as_str().expect("digest");
    let manifest_bytes = blob(digest);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("manifest");
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest");
    let config_bytes = blob(config_digest);
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).expect("config");
    let layers: Vec<(Digest, Vec<u8>, Vec<u8>)> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().expect("layer digest");
            (Digest::parse(d).expect("digest"), blob(d), Vec::new())
        })
        .collect();
    let config_digest = Digest::parse(config_digest).expect("digest");
    let mut blobs = vec![(config_digest.clone(), config_bytes.clone())];
    blobs.extend(layers.iter().map(|(d, b, _)| (d.clone(), b.clone())));
    TestImage {
        manifest: manifest_bytes,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        digest: Digest::parse(digest).expect("digest"),
        config: (config_digest, config_bytes),
        layers,
        blobs,
        architecture: config["architecture"].as_str().unwrap_or_default().to_string(),
    }
}

fn add(t: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    t.append_data(&mut h, name, data).expect("append");
}

/// `exe` run again inside fresh network, mount and PID namespaces that play a node (`unshare`
/// from util-linux): interfaces and mounts it makes stay there, and every process it starts
/// dies with it. Used by the agent's tests and benchmarks.
pub fn in_node_namespaces(exe: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "--",
    ])
    .arg(exe);
    c
}

/// Whether this process may chroot, mknod and set trusted xattrs.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A unique temp data dir for a test.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("data dir")
}

/// The path of `rel` under `root`.
pub fn at(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}
