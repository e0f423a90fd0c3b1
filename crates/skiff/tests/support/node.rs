//! What root end-to-end tests of real nodes share: running the test again inside fresh
//! namespaces, the busybox test image and its import into a node's image store, and polling.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_runtime::testing::{self, layer, Compression, ManifestKind};
use skiff_runtime::{ImageStore, Platform};

/// Set in the copy of a test that runs inside its namespaces.
pub const INNER: &str = "SKIFF_NODE_TEST_INNER";

/// The test image's reference (imported, never pulled).
pub const IMAGE: &str = "registry.test/busybox:1";

/// True in the copy inside fresh network, mount and PID namespaces (the test's "machine": the
/// bridges, veths, mounts and processes it makes never touch the real one, and die with it);
/// otherwise runs that copy and checks its result.
pub fn inside_namespaces(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    assert!(
        testing::is_root(),
        "{test} needs root: it runs containers and makes network namespaces, bridges and mounts"
    );
    let exe = std::env::current_exe().expect("test binary");
    let out = testing::in_node_namespaces(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} failed inside its namespaces");
    assert!(stdout.contains("1 passed"), "{test} did not run inside its namespaces");
    false
}

/// busybox with the applets the tests' pods use, and a page for httpd.
pub fn test_image() -> testing::TestImage {
    let base = layer(|l| {
        l.dir("bin", 0o755).busybox("bin/busybox");
        for a in [
            "sh",
            "httpd",
            "sleep",
            "cat",
            "echo",
            "env",
            "hostname",
            "ls",
            "touch",
            "rm",
            "grep",
            "head",
            "tr",
            "true",
            "tty",
            "stty",
            "wget",
            "ssl_client",
            "mkdir",
            "sort",
            "uniq",
            "wc",
            "date",
            "ip",
            "nslookup",
            "timeout",
            "nc",
            "printf",
        ] {
            l.symlink(&format!("bin/{a}"), "busybox");
        }
        l.dir("etc", 0o755)
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
            .file("etc/group", b"root:x:0:\n", 0o644)
            .dir("tmp", 0o1777)
            .dir("srv", 0o755)
            .file("srv/index.html", b"hello from a skiff pod\n", 0o644);
    });
    testing::image(
        ManifestKind::Oci,
        &Platform::host().architecture,
        &[(base, Compression::Gzip)],
    )
}

/// Imports the test image as [`IMAGE`] into the image store of the agent whose data
/// directory is `agent_dir` (`<data-dir>/agent`).
pub fn import_test_image(agent_dir: &Path) {
    let img = test_image();
    let archive = agent_dir.join("image.tar");
    std::fs::create_dir_all(agent_dir).expect("agent dir");
    testing::write_oci_archive(&archive, &[(IMAGE, &img)]);
    let store = ImageStore::open(agent_dir).expect("image store");
    skiff_runtime::import_archive(&store, &archive, &Platform::host()).expect("import");
}

/// Polls `f` every 200 ms until it returns `Some`, for up to `secs` seconds.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh network namespace has its loopback down.
pub fn bring_up_loopback() {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2)");
    assert!(up.success(), "bring up loopback in the test's namespace");
}

/// `GET /index.html` over HTTP/1.0; the whole response.
pub fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    http_get_path(addr, "/index.html")
}

/// `GET path` over HTTP/1.0; the whole response (a CGI page may take a while).
pub fn http_get_path(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Where the nginx image of scripts/nginx-image.sh is kept between runs: named by a hash of the
/// scripts that make it, so a changed script makes a new one.
pub fn nginx_image_path() -> std::path::PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for script in ["scripts/nginx-image.sh", "scripts/oci-archive.sh"] {
        std::fs::read(super::repo_file(script))
            .expect("image script")
            .hash(&mut h);
    }
    std::path::PathBuf::from(format!("/var/tmp/skiff-test-images/nginx-{:016x}.tar", h.finish()))
}

/// Builds the nginx image archive unless it is there. It downloads Debian's nginx package, so
/// it runs before a test enters its namespaces (which have no network).
pub fn build_nginx_image() -> std::path::PathBuf {
    let path = nginx_image_path();
    if path.exists() {
        return path;
    }
    let dir = path.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("image cache dir");
    let tmp = dir.join(format!("building-{}.tar", std::process::id()));
    super::run_script("scripts/nginx-image.sh", &tmp);
    std::fs::rename(&tmp, &path).expect("keep the nginx image");
    path
}
