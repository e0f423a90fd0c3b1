//! `skiff image import|ls|pull|rm` as a user runs them: the built binary, a temp data dir,
//! archives and a registry (Debian's docker-registry on loopback) made by the test.

use std::path::Path;
use std::process::{Command, Output};

use skiff_runtime::testing::{self, layer, Compression, ManifestKind, Registry};
use skiff_runtime::{ImageStore, Platform};

fn skiff(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("image")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("SKIFF_PRIVATE_REGISTRY")
        .output()
        .expect("run skiff")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "skiff failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "skiff should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `skiff image ls` rows as (repository, tag, digest, id, size).
fn ls(data: &Path) -> Vec<Vec<String>> {
    let out = ok(skiff(data, &["ls"]));
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("header")
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(header, vec!["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE"]);
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn import_list_and_remove_archives() {
    let arch = Platform::host().architecture;
    let docker_img = testing::busybox_image(ManifestKind::Docker, &arch);
    let extra = layer(|l| {
        l.file("etc/app.conf", b"x=1\n", 0o644);
    });
    let base = layer(|l| {
        l.dir("bin", 0o755).busybox("bin/busybox").symlink("bin/sh", "busybox");
    });
    let oci_img = testing::image(
        ManifestKind::Oci,
        &arch,
        &[(base, Compression::Gzip), (extra, Compression::Zstd)],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let docker_tar = tmp.path().join("busybox-docker.tar");
    testing::write_docker_archive(
        &docker_tar,
        &[
            ("busybox:1.36", &docker_img),
            ("registry.local:5000/tools/busybox:v1", &docker_img),
        ],
    );
    let oci_tar = tmp.path().join("app-oci.tar");
    testing::write_oci_archive(&oci_tar, &[("registry.local:5000/app:2.0", &oci_img)]);
    // `docker save | gzip` works too.
    let gz_tar = tmp.path().join("app-oci.tar.gz");
    std::fs::write(
        &gz_tar,
        testing::compress(&std::fs::read(&oci_tar).expect("read"), Compression::Gzip),
    )
    .expect("write gz");

    let data = tempfile::tempdir().expect("data");
    let out = ok(skiff(
        data.path(),
        &[
            "import",
            docker_tar.to_str().expect("utf8"),
            gz_tar.to_str().expect("utf8"),
        ],
    ));
    assert!(out.contains("Imported docker.io/library/busybox:1.36"), "{out}");
    assert!(out.contains("Imported registry.local:5000/tools/busybox:v1"), "{out}");
    assert!(out.contains("Imported registry.local:5000/app:2.0"), "{out}");

    let rows = ls(data.path());
    let repos: Vec<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(
        repos,
        vec![
            ("docker.io/library/busybox", "1.36"),
            ("registry.local:5000/app", "2.0"),
            ("registry.local:5000/tools/busybox", "v1"),
        ]
    );
    // The OCI image keeps its manifest digest; both docker names are one image ID.
    assert_eq!(rows[1][2], oci_img.digest.short());
    assert_eq!(rows[1][3], oci_img.config.0.short());
    assert_eq!(rows[0][3], docker_img.config.0.short());
    assert_eq!(rows[0][3], rows[2][3]);
    assert!(rows[0][4].ends_with("MB"), "busybox is megabytes: {:?}", rows[0]);

    // Imported images are usable by the node agent of a server with the same data dir (its
    // store is <data-dir>/agent): their rootfs holds the busybox binary.
    let store = ImageStore::open(&data.path().join("agent")).expect("store");
    let rec = store
        .resolve("registry.local:5000/app:2.0")
        .expect("resolve")
        .expect("present");
    let rootfs = tmp.path().join("rootfs");
    store.materialize_rootfs(&rec, &rootfs).expect("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(std::fs::read(rootfs.join("etc/app.conf")).expect("conf"), b"x=1\n");

    // Removing one name keeps the image's other name and its content.
    let out = ok(skiff(data.path(), &["rm", "busybox:1.36"]));
    assert_eq!(out.trim(), "Deleted: docker.io/library/busybox:1.36");
    let rows = ls(data.path());
    assert_eq!(rows.len(), 2);
    let rec = store
        .resolve("registry.local:5000/tools/busybox:v1")
        .expect("resolve")
        .expect("present");
    store
        .materialize_rootfs(&rec, &tmp.path().join("rootfs2"))
        .expect("content of the remaining name is intact");

    // Removing by image ID removes the rest; the blobs go with them.
    let out = ok(skiff(
        data.path(),
        &["rm", oci_img.config.0.short(), "registry.local:5000/tools/busybox:v1"],
    ));
    assert!(out.contains("Deleted: registry.local:5000/app:2.0"), "{out}");
    assert!(ls(data.path()).is_empty());
    let blobs = std::fs::read_dir(data.path().join("agent/images/blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(blobs, 0, "no content left behind");

    let err = failed(skiff(data.path(), &["rm", "busybox:1.36"]));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn bad_archives_are_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tempfile::tempdir().expect("data");
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tarball").expect("junk");
    let err = failed(skiff(data.path(), &["import", junk.to_str().expect("utf8")]));
    assert!(err.contains("junk.tar"), "{err}");

    // A tarball with `..` entries and no image: nothing lands outside, and it says why.
    let evil = layer(|l| {
        l.raw_file("../../escaped.txt", b"pwned")
            .file("hello.txt", b"hi", 0o644);
    });
    let evil_tar = tmp.path().join("sub/evil.tar");
    std::fs::create_dir_all(evil_tar.parent().expect("parent")).expect("mkdir");
    std::fs::write(&evil_tar, evil).expect("write");
    let err = failed(skiff(data.path(), &["import", evil_tar.to_str().expect("utf8")]));
    assert!(err.contains("neither a docker-archive"), "{err}");
    assert!(!tmp.path().join("escaped.txt").exists());
    assert!(!data.path().join("escaped.txt").exists());
    assert!(!data.path().join("agent/images/escaped.txt").exists());
    assert!(ls(data.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_from_a_registry_and_through_a_mirror() {
    let registry = Registry::start(None);
    let img = testing::busybox_image(ManifestKind::Oci, &Platform::host().architecture);
    registry.push("library/busybox", "1.36", &img).await;
    let data = tempfile::tempdir().expect("data");

    let name = format!("{}/library/busybox:1.36", registry.addr);
    let out = ok(skiff(data.path(), &["pull", &name]));
    assert!(out.contains(&format!("Image is up to date for {name}")), "{out}");

    let yaml = tempfile::NamedTempFile::new().expect("yaml");
    std::fs::write(
        yaml.path(),
        format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", registry.addr),
    )
    .expect("write yaml");
    let out = ok(skiff(
        data.path(),
        &[
            "pull",
            "busybox:1.36",
            "--private-registry",
            yaml.path().to_str().expect("utf8"),
        ],
    ));
    assert!(out.contains("docker.io/library/busybox:1.36"), "{out}");
    let rows = ls(data.path());
    let repos: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(repos.len(), 2, "{rows:?}");
    assert!(repos.contains(&"docker.io/library/busybox"));
    assert!(repos.contains(&format!("{}/library/busybox", registry.addr).as_str()));
    assert_eq!(rows[0][2], rows[1][2], "same digest from either source");

    let err = failed(skiff(
        data.path(),
        &["pull", &format!("{}/library/busybox:nope", registry.addr)],
    ));
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
}
