//! Test support: a real `skiff server` process on a free port with its own data dir, and the
//! real kubectl binaries the machine ships (found beside `readlink -f $(which kubectl)`);
//! what root tests of real nodes share ([`node`]) and several nodes on one machine
//! ([`cluster`]).

#![allow(dead_code)]

pub mod cluster;
pub mod node;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct SkiffServer {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
}

impl SkiffServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, 0)
    }

    /// Start (or restart) on `dir`; port 0 picks a free one.
    pub fn start_in(dir: tempfile::TempDir, port: u16) -> Self {
        Self::start_with(dir, port, &[])
    }

    /// Start with extra `skiff server` flags (the control plane only: no embedded agent).
    pub fn start_with(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> Self {
        let mut args = vec!["--disable-agent"];
        args.extend_from_slice(extra);
        Self::launch(dir, port, &args)
    }

    /// Start with the embedded node agent: this machine runs pods as containers. Only inside
    /// namespaces the test made (it creates a bridge, veths and mounts).
    /// Image GC is off: whether it would run depends on how full the test machine's disk is.
    pub fn start_with_agent(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let mut args = vec!["--image-gc-high-threshold", "100"];
        args.extend_from_slice(extra);
        Self::launch(dir, 0, &args)
    }

    fn launch(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "server",
                "--bind-address",
                "127.0.0.1",
                "--https-listen-port",
                &port.to_string(),
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut port = 0;
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("Skiff API server listening on https://127.0.0.1:") {
                port = rest.trim().parse().expect("port");
                break;
            }
        }
        assert!(port != 0, "skiff server did not report its address");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        SkiffServer {
            child,
            dir,
            port,
            kubeconfig,
        }
    }

    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for SkiffServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kube-rs client with the server's admin kubeconfig.
pub async fn client(server: &SkiffServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Poll `f` every 100 ms until it returns `Some`, for up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// The directory holding `kubectl.1.27` … `kubectl.1.33`.
pub fn kubectl_dir() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "kubectl must be installed (the machine image ships kubectl 1.27–1.33)"
    );
    Path::new(&path).parent().expect("kubectl dir").to_path_buf()
}

pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub cache: tempfile::TempDir,
}

impl Kubectl {
    pub fn new(version: &str, server: &SkiffServer) -> Self {
        Self::at(version, &server.kubeconfig)
    }

    /// kubectl `version` with the kubeconfig at `kubeconfig`.
    pub fn at(version: &str, kubeconfig: &Path) -> Self {
        let bin = kubectl_dir().join(format!("kubectl.{version}"));
        assert!(bin.exists(), "{} missing", bin.display());
        Kubectl {
            bin,
            kubeconfig: kubeconfig.to_path_buf(),
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The same kubectl with a kubeconfig that names the server and trusts its CA but holds
    /// no credentials: give it `--token=…` (without, kubectl asks for a user name).
    pub fn without_credentials(&self, server: &SkiffServer) -> Kubectl {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = server
            .dir
            .path()
            .join(format!("anonymous-{}.yaml", N.fetch_add(1, Ordering::Relaxed)));
        let ca = server.dir.path().join("tls/ca.crt");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\ncontexts:\n- name: skiff\n  context: {{cluster: skiff, user: nobody, namespace: default}}\ncurrent-context: skiff\nusers:\n- name: nobody\n  user: {{}}\n",
            server.port,
            ca.display()
        );
        std::fs::write(&path, config).expect("write a kubeconfig");
        Kubectl {
            bin: self.bin.clone(),
            kubeconfig: path,
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kubectl")
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// Runs the repository's bash script `rel` (e.g. `scripts/nginx-image.sh`) with `out` as its
/// argument; fails the test if it fails.
pub fn run_script(rel: &str, out: &Path) {
    let ok = std::process::Command::new("bash")
        .arg(repo_file(rel))
        .arg(out)
        .status()
        .expect("bash");
    assert!(ok.success(), "{rel}");
}
