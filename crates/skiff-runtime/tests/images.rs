//! Pulls from a real registry (Debian's docker-registry) on loopback, of images the tests build
//! from busybox-static: layers, whiteouts, compression, multi-arch, mirrors, auth, errors,
//! root filesystems (copy and overlay) and image GC.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use skiff_runtime::testing::{self, layer, Compression, ManifestKind, Registry};
use skiff_runtime::{
    collect_garbage, DiskUsage, DockerCredentials, GcPolicy, ImageRef, ImageStore, NoProgress, Platform, PullError,
    PullProgress, Puller, RegistriesConfig, StoreError, UnpackError,
};

#[derive(Default)]
struct Recorder {
    bytes: AtomicU64,
    finished: AtomicU64,
}

impl PullProgress for Recorder {
    fn downloaded(&self, _blob: &skiff_runtime::Digest, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn finished(&self, _blob: &skiff_runtime::Digest) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

fn new_puller(data: &Path, registries: RegistriesConfig) -> (ImageStore, Puller) {
    let store = ImageStore::open(data).expect("store");
    (store.clone(), Puller::new(store, registries))
}

fn reference(s: &str) -> ImageRef {
    ImageRef::parse(s).expect("reference")
}

/// Three layers: gzip base (busybox, symlinks, a hard link, files to hide), a plain layer
/// with a whiteout and an opaque directory, a zstd layer with an absolute symlink.
fn three_layer_image() -> testing::TestImage {
    let base = layer(|l| {
        l.dir("bin", 0o755)
            .busybox("bin/busybox")
            .symlink("bin/sh", "busybox")
            .symlink("bin/ls", "busybox")
            .hardlink("bin/busybox-hard", "bin/busybox")
            .dir("etc", 0o755)
            .file("etc/motd", b"motd\n", 0o644)
            .file("etc/remove-me", b"gone soon\n", 0o644)
            .dir("opt", 0o755)
            .dir("opt/data", 0o755)
            .file("opt/data/old.txt", b"old\n", 0o644)
            .dir("opt/data/sub", 0o755)
            .file("opt/data/sub/deep.txt", b"deep\n", 0o644)
            .dir("home", 0o755)
            .dir("home/user", 0o755)
            .file_owned("home/user/file", b"mine\n", 0o600, 1000, 1000)
            .dir("usr", 0o755)
            .dir("usr/lib", 0o755)
            .file("usr/lib/a", b"a\n", 0o644)
            .symlink("lib", "usr/lib")
            .dir("srv", 0o750);
    });
    let middle = layer(|l| {
        l.whiteout("etc/remove-me")
            .opaque("opt/data")
            .file("opt/data/new.txt", b"new\n", 0o644);
    });
    let top = layer(|l| {
        l.file("etc/hello.txt", b"hello from the zstd layer\n", 0o644)
            .symlink("bin/abs", "/bin/busybox")
            // Through the lower layer's `lib -> usr/lib`, into its `srv` (mode kept), and a
            // hard link to a lower layer's file.
            .file("lib/b", b"b\n", 0o644)
            .file("srv/x", b"x\n", 0o644)
            .hardlink("bin/bb2", "bin/busybox");
    });
    testing::image(
        ManifestKind::Oci,
        &Platform::host().architecture,
        &[
            (base, Compression::Gzip),
            (middle, Compression::None),
            (top, Compression::Zstd),
        ],
    )
}

/// What the top layer did through lower layers' entries.
fn check_cross_layer(rootfs: &Path) {
    assert_eq!(
        std::fs::read_link(rootfs.join("lib")).expect("lib"),
        Path::new("usr/lib"),
        "still a symlink"
    );
    assert_eq!(
        std::fs::read(rootfs.join("usr/lib/b")).expect("b"),
        b"b\n",
        "written through it"
    );
    assert!(rootfs.join("usr/lib/a").exists(), "the lower file is still seen");
    let srv = std::fs::metadata(rootfs.join("srv")).expect("srv");
    assert_eq!(srv.permissions().mode() & 0o777, 0o750, "lower directory's mode kept");
    assert_eq!(
        std::fs::read(rootfs.join("bin/bb2")).expect("bb2"),
        std::fs::read(testing::BUSYBOX).expect("busybox"),
        "hard link to a lower layer's file"
    );
}

fn run_in_chroot(rootfs: &Path, args: &[&str]) -> String {
    let out = Command::new("chroot").arg(rootfs).args(args).output().expect("chroot");
    assert!(
        out.status.success(),
        "chroot {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_a_layered_image_and_builds_its_rootfs() {
    let registry = Registry::start(None);
    let img = three_layer_image();
    registry.push("test/busybox", "1.36", &img).await;

    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), RegistriesConfig::default());
    let r = reference(&format!("{}/test/busybox:1.36", registry.addr));
    let progress = Recorder::default();
    let rec = puller
        .pull(&r, &DockerCredentials::none(), &progress)
        .await
        .expect("pull");
    assert_eq!(rec.name, format!("{}/test/busybox:1.36", registry.addr));
    assert_eq!(rec.repo_digest, img.digest);
    assert_eq!(rec.config, img.config.0);
    assert_eq!(rec.layers.len(), 3);
    let total: u64 = img.blobs.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(
        progress.bytes.load(Ordering::Relaxed),
        total,
        "every blob downloaded once"
    );
    assert_eq!(progress.finished.load(Ordering::Relaxed), 4);
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, rec.name);

    // A second pull only fetches the manifest.
    let again = Recorder::default();
    let rec2 = puller
        .pull(&r, &DockerCredentials::none(), &again)
        .await
        .expect("re-pull");
    assert_eq!(again.bytes.load(Ordering::Relaxed), 0);
    assert_eq!(rec2.manifest, rec.manifest);

    // Copy fallback.
    let rootfs = data.path().join("rootfs");
    store.materialize_rootfs(&rec, &rootfs).expect("rootfs");
    let bb = rootfs.join("bin/busybox");
    let meta = std::fs::metadata(&bb).expect("bin/busybox exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o755, "executable");
    assert_eq!(
        std::fs::read(&bb).expect("read"),
        std::fs::read(testing::BUSYBOX).expect("host busybox")
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/abs")).expect("abs"),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/busybox-hard")).expect("hard").ino(),
        meta.ino(),
        "hard link preserved"
    );
    assert!(rootfs.join("etc/motd").exists());
    assert!(!rootfs.join("etc/remove-me").exists(), "whiteout applied");
    assert!(!rootfs.join("etc/.wh.remove-me").exists());
    assert!(
        !rootfs.join("opt/data/old.txt").exists(),
        "opaque dir hides lower files"
    );
    assert!(!rootfs.join("opt/data/sub").exists(), "opaque dir hides lower dirs");
    assert_eq!(std::fs::read(rootfs.join("opt/data/new.txt")).expect("new"), b"new\n");
    assert!(rootfs.join("etc/hello.txt").exists(), "zstd layer applied");
    check_cross_layer(&rootfs);
    let owned = std::fs::metadata(rootfs.join("home/user/file")).expect("owned");
    assert_eq!(owned.permissions().mode() & 0o777, 0o600);

    if testing::is_root() {
        assert_eq!((owned.uid(), owned.gid()), (1000, 1000), "ownership kept as root");
        // The unpacked static busybox runs inside its rootfs.
        assert_eq!(run_in_chroot(&rootfs, &["/bin/busybox", "echo", "hi"]), "hi\n");
        assert_eq!(
            run_in_chroot(
                &rootfs,
                &["/bin/sh", "-c", "/bin/busybox cat /etc/hello.txt && ls /opt/data"]
            ),
            "hello from the zstd layer\nnew.txt\n"
        );

        // Overlay: snapshots in overlay format, top layer first, and a real mount shows the
        // same tree as the copy.
        let lower = store.overlay_lowerdirs(&rec).expect("snapshots");
        assert_eq!(lower.len(), 3);
        assert_eq!(
            lower[2],
            store.snapshot_path(&rec.layers[0].diff_id),
            "bottom chain ID = diff ID"
        );
        let wh = std::fs::symlink_metadata(lower[1].join("etc/remove-me")).expect("whiteout device");
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "0/0 char device");
        let mut buf = [0u8; 8];
        let n = rustix::fs::lgetxattr(lower[1].join("opt/data"), "trusted.overlay.opaque", &mut buf[..])
            .expect("opaque xattr");
        assert_eq!(&buf[..n], b"y");
        let mnt = data.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mnt");
        let lowerdir = lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &format!("lowerdir={lowerdir}")])
            .arg(&mnt)
            .status()
            .expect("mount");
        assert!(st.success(), "overlay mount of the snapshots");
        let seen = (
            mnt.join("etc/remove-me").exists(),
            mnt.join("opt/data/old.txt").exists(),
            mnt.join("opt/data/new.txt").exists(),
            mnt.join("bin/busybox").exists(),
        );
        let cross = std::panic::catch_unwind(|| check_cross_layer(&mnt));
        let ran = Command::new("chroot")
            .arg(&mnt)
            .args(["/bin/sh", "-c", "echo from overlay"])
            .output()
            .expect("chroot");
        let _ = Command::new("umount").arg(&mnt).status();
        assert_eq!(seen, (false, false, true, true), "overlay shows whiteouts applied");
        assert!(cross.is_ok(), "overlay view matches the copy");
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "from overlay\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_schema2_images_and_concurrent_pulls() {
    let registry = Registry::start(None);
    let img = testing::busybox_image(ManifestKind::Docker, &Platform::host().architecture);
    registry.push("library/busybox", "docker", &img).await;
    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), RegistriesConfig::default());
    let r = reference(&format!("{}/library/busybox:docker", registry.addr));
    // Two pulls of the same image at once must both succeed and leave one sound copy.
    let none = DockerCredentials::none();
    let (a, b) = tokio::join!(puller.pull(&r, &none, &NoProgress), puller.pull(&r, &none, &NoProgress));
    let a = a.expect("pull a");
    let b = b.expect("pull b");
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(
        a.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    for l in &a.layers {
        let bytes = store.content().read(&l.digest).expect("blob");
        assert_eq!(skiff_runtime::Digest::of(&bytes), l.digest, "blob verified");
    }
    let rootfs = data.path().join("rootfs");
    store.materialize_rootfs(&a, &rootfs).expect("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    let cfg = store.config(&a).expect("config");
    assert_eq!(
        cfg.config().as_ref().and_then(|c| c.cmd().clone()),
        Some(vec!["/bin/sh".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_resolves_to_the_platform() {
    let registry = Registry::start(None);
    let amd = testing::busybox_image(ManifestKind::Oci, "amd64");
    let arm = testing::busybox_image(ManifestKind::Oci, "arm64");
    let idx = testing::index(vec![amd.clone(), arm.clone()]);
    registry.push_index("multi/busybox", "1.36", &idx).await;
    let r = reference(&format!("{}/multi/busybox:1.36", registry.addr));

    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), RegistriesConfig::default());
    let host = Platform::host();
    let rec = puller
        .pull(&r, &DockerCredentials::none(), &NoProgress)
        .await
        .expect("pull for the host");
    assert_eq!(rec.repo_digest, idx.digest, "the repo digest is the index's");
    let want = if host.architecture == "arm64" { &arm } else { &amd };
    assert_eq!(rec.manifest, want.digest, "the host's manifest ({host})");
    let rootfs = data.path().join("rootfs");
    store.materialize_rootfs(&rec, &rootfs).expect("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).expect("motd"),
        format!("hello from {}\n", want.architecture)
    );

    let arm_data = testing::data_dir();
    let (_, arm_puller) = new_puller(arm_data.path(), RegistriesConfig::default());
    let arm_puller = arm_puller.with_platform(Platform::parse("linux/arm64").expect("platform"));
    let rec = arm_puller
        .pull(&r, &DockerCredentials::none(), &NoProgress)
        .await
        .expect("pull arm64");
    assert_eq!(rec.manifest, arm.digest);

    let s390_data = testing::data_dir();
    let (_, s390) = new_puller(s390_data.path(), RegistriesConfig::default());
    let err = s390
        .with_platform(Platform::parse("linux/s390x").expect("platform"))
        .pull(&r, &DockerCredentials::none(), &NoProgress)
        .await
        .expect_err("no s390x manifest");
    assert!(matches!(err, PullError::NoMatchingPlatform { .. }), "{err}");
    assert!(err.to_string().contains("linux/arm64/v8"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_yaml_mirror_serves_docker_io_names() {
    let registry = Registry::start(None);
    let img = testing::busybox_image(ManifestKind::Oci, &Platform::host().architecture);
    registry.push("library/busybox", "1.36", &img).await;
    registry.push("mirrored/rancher-busybox", "1.36", &img).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://127.0.0.1:{dead}\"\n      - \"http://{addr}\"\n    rewrite:\n      \"^rancher/(.*)\": \"mirrored/rancher-$1\"\n",
        addr = registry.addr
    );
    let cfg = RegistriesConfig::parse(&yaml).expect("registries.yaml");
    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), cfg);

    // `busybox:1.36` is docker.io/library/busybox:1.36, served by the second mirror after the
    // first refuses connections.
    let rec = puller
        .pull(&reference("busybox:1.36"), &DockerCredentials::none(), &NoProgress)
        .await
        .expect("pull through the mirror");
    assert_eq!(rec.name, "docker.io/library/busybox:1.36");
    assert_eq!(rec.repo_digest, img.digest);
    assert!(store.resolve("busybox:1.36").expect("resolve").is_some());

    // A rewrite maps the repository on the mirror; the image keeps its own name.
    let rec = puller
        .pull(
            &reference("rancher/busybox:1.36"),
            &DockerCredentials::none(),
            &NoProgress,
        )
        .await
        .expect("pull with rewrite");
    assert_eq!(rec.name, "docker.io/rancher/busybox:1.36");
    let names: Vec<_> = store.list().expect("list").into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        vec!["docker.io/library/busybox:1.36", "docker.io/rancher/busybox:1.36"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_is_required_and_accepted() {
    let registry = Registry::start(Some(("skiff", "s3cret")));
    let img = testing::busybox_image(ManifestKind::Oci, &Platform::host().architecture);
    registry.push("private/busybox", "1.0", &img).await;
    let r = reference(&format!("{}/private/busybox:1.0", registry.addr));
    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), RegistriesConfig::default());

    let err = puller
        .pull(&r, &DockerCredentials::none(), &NoProgress)
        .await
        .expect_err("anonymous pull of a private image");
    assert_eq!(err.reason(), "UNAUTHORIZED", "{err}");
    assert!(err.to_string().contains("UNAUTHORIZED"), "{err}");

    let wrong = DockerCredentials::from_json(
        format!(
            r#"{{"auths":{{"{}":{{"username":"skiff","password":"nope"}}}}}}"#,
            registry.addr
        )
        .as_bytes(),
    )
    .expect("creds");
    let err = puller.pull(&r, &wrong, &NoProgress).await.expect_err("wrong password");
    assert_eq!(err.reason(), "UNAUTHORIZED", "{err}");
    assert!(store.list().expect("list").is_empty());

    // A dockerconfigjson, as an imagePullSecret holds it.
    let auth = base64::engine::general_purpose::STANDARD.encode("skiff:s3cret");
    let secret = format!(r#"{{"auths":{{"http://{}":{{"auth":"{auth}"}}}}}}"#, registry.addr);
    let creds = DockerCredentials::from_json(secret.as_bytes()).expect("creds");
    let rec = puller
        .pull(&r, &creds, &NoProgress)
        .await
        .expect("pull with a pull secret");
    assert_eq!(rec.repo_digest, img.digest);

    // Node-level credentials from registries.yaml.
    let yaml = format!(
        "configs:\n  \"{}\":\n    auth:\n      username: skiff\n      password: s3cret\n",
        registry.addr
    );
    let cfg = RegistriesConfig::parse(&yaml).expect("yaml");
    let node_data = testing::data_dir();
    let (_, node_puller) = new_puller(node_data.path(), cfg);
    node_puller
        .pull(&r, &DockerCredentials::none(), &NoProgress)
        .await
        .expect("pull with registries.yaml credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_the_registry_reason() {
    let registry = Registry::start(None);
    let img = testing::busybox_image(ManifestKind::Oci, &Platform::host().architecture);
    registry.push("test/busybox", "1.36", &img).await;
    let data = testing::data_dir();
    let (_, puller) = new_puller(data.path(), RegistriesConfig::default());

    let err = puller
        .pull(
            &reference(&format!("{}/test/busybox:nope", registry.addr)),
            &DockerCredentials::none(),
            &NoProgress,
        )
        .await
        .expect_err("missing tag");
    assert_eq!(err.reason(), "MANIFEST_UNKNOWN", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("MANIFEST_UNKNOWN") && msg.contains("manifest unknown"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("http://{}", registry.addr)),
        "names the endpoint: {msg}"
    );

    let err = puller
        .pull(
            &reference(&format!("{}/no/such-repo:1", registry.addr)),
            &DockerCredentials::none(),
            &NoProgress,
        )
        .await
        .expect_err("missing repository");
    assert!(
        matches!(err.reason(), "NAME_UNKNOWN" | "MANIFEST_UNKNOWN"),
        "{}: {err}",
        err.reason()
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let err = puller
        .pull(
            &reference(&format!("127.0.0.1:{dead}/x/y:1")),
            &DockerCredentials::none(),
            &NoProgress,
        )
        .await
        .expect_err("unreachable registry");
    assert_eq!(err.reason(), "CONNECTION_FAILED", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{dead}")), "{msg}");
    assert!(
        msg.to_lowercase().contains("connection refused") || msg.contains("connect"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_are_refused_without_writing_outside() {
    let registry = Registry::start(None);
    let evil = layer(|l| {
        l.file("ok.txt", b"fine", 0o644)
            .raw_file("../../../escaped.txt", b"pwned");
    });
    let img = testing::image(
        ManifestKind::Oci,
        &Platform::host().architecture,
        &[(evil, Compression::Gzip)],
    );
    registry.push("evil/image", "1", &img).await;
    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), RegistriesConfig::default());
    let rec = puller
        .pull(
            &reference(&format!("{}/evil/image:1", registry.addr)),
            &DockerCredentials::none(),
            &NoProgress,
        )
        .await
        .expect("the blobs themselves are fine");
    let rootfs = data.path().join("a/b/c/rootfs");
    let err = store.materialize_rootfs(&rec, &rootfs).expect_err("refused");
    assert!(
        matches!(
            err,
            StoreError::Unpack {
                source: UnpackError::PathTraversal { .. },
                ..
            }
        ),
        "{err}"
    );
    for dir in [
        data.path().join("escaped.txt"),
        data.path().join("a/escaped.txt"),
        data.path().join("a/b/escaped.txt"),
    ] {
        assert!(!dir.exists(), "{} written", dir.display());
    }
    if testing::is_root() {
        let err = store.overlay_lowerdirs(&rec).expect_err("snapshot refused too");
        assert!(err.to_string().contains("escapes the target directory"), "{err}");
        assert!(
            !store.snapshot_path(&rec.layers[0].diff_id).exists(),
            "no partial snapshot kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_gc_removes_least_recently_used_unused_images() {
    let registry = Registry::start(None);
    let arch = Platform::host().architecture;
    let old = testing::image(
        ManifestKind::Oci,
        &arch,
        &[(
            layer(|l| {
                l.file("old", b"old", 0o644);
            }),
            Compression::Gzip,
        )],
    );
    let used = testing::image(
        ManifestKind::Oci,
        &arch,
        &[(
            layer(|l| {
                l.file("used", b"used", 0o644);
            }),
            Compression::Gzip,
        )],
    );
    let newer = testing::image(
        ManifestKind::Oci,
        &arch,
        &[(
            layer(|l| {
                l.file("newer", b"newer", 0o644);
            }),
            Compression::Gzip,
        )],
    );
    registry.push("gc/old", "1", &old).await;
    registry.push("gc/used", "1", &used).await;
    registry.push("gc/newer", "1", &newer).await;
    let data = testing::data_dir();
    let (store, puller) = new_puller(data.path(), RegistriesConfig::default());
    let name = |r: &str| format!("{}/gc/{r}:1", registry.addr);
    for r in ["used", "old", "newer"] {
        puller
            .pull(&reference(&name(r)), &DockerCredentials::none(), &NoProgress)
            .await
            .expect("pull");
    }
    store.touch(&name("newer")).expect("touch");
    let in_use: HashSet<String> = [name("used")].into();
    // The images were pulled just now: no minimum age.
    let policy = GcPolicy {
        min_age: std::time::Duration::ZERO,
        ..GcPolicy::default()
    };

    // Below the threshold: nothing happens.
    let calm = |_: &Path| {
        Ok(DiskUsage {
            capacity: 1000,
            available: 500,
        })
    };
    let r = collect_garbage(&store, &in_use, policy, calm).expect("gc");
    assert!(r.removed.is_empty());
    assert_eq!(store.list().expect("list").len(), 3);

    // 90% full, and freeing one small image is not enough: both unused images go, the oldest
    // first; the one in use stays with its content.
    let full = |_: &Path| {
        Ok(DiskUsage {
            capacity: 100 << 20,
            available: 10 << 20,
        })
    };
    let r = collect_garbage(&store, &in_use, policy, full).expect("gc");
    assert_eq!(r.removed, vec![name("old"), name("newer")]);
    assert_eq!(r.pruned.blobs, 6, "manifest, config and layer of each removed image");
    let left = store.list().expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, name("used"));
    let rootfs = data.path().join("rootfs");
    store
        .materialize_rootfs(&left[0], &rootfs)
        .expect("the used image is intact");
    assert!(rootfs.join("used").exists());
    assert!(!store.content().has(&old.layers[0].0), "unreferenced layer deleted");
}
