//! A throwaway Linux VM for tests that need a kernel set up unlike the host's (cgroup v2 only,
//! say): Debian's stock kernel under qemu, the host's root filesystem read-only over
//! virtio-9p, and a tiny initramfs that mounts it and hands over to a job script.
//!
//! - The kernel: `linux-image-amd64`'s current version, fetched once with `apt-get download`
//!   and cached under `/var/tmp/skiff-test-images/kernel-<package>_<version>/` (the
//!   `vmlinuz` and the few modules the initramfs loads: virtio-pci, 9p, overlayfs).
//! - The initramfs: busybox-static (`/bin/busybox`) and those modules; its `/init` loads them,
//!   mounts the host's `/` read-only (9p, `hostroot`), proc, sysfs, devtmpfs, **cgroup2 alone**
//!   at `/sys/fs/cgroup` (every controller enabled for children, as systemd does), tmpfs at
//!   `/tmp` and `/run`, and the writable share (9p, `out`) at [`SHARE`]; then `switch_root`s
//!   (a `chroot` would leave the mount namespace's root at the initramfs, where `setns` puts a
//!   container's `exec`) and runs `job.sh` from the share as PID 1, which writes its results
//!   there and powers the VM off.
//! - The kernel command line has `cgroup_no_v1=all`: no v1 hierarchy can be mounted at all.
//! - qemu uses KVM where it can run a stock kernel (`kvm_intel` or `kvm_amd` loaded, see
//!   [`Accel::detect`]), otherwise TCG, software emulation (slower, the same VM).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the VM sees the writable share (the host directory given to [`boot`]).
pub const SHARE: &str = "/run/vm";

/// The modules the initramfs loads (with what they depend on, unless built in).
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The metapackage that names the current stock kernel.
const KERNEL_PACKAGE: &str = "linux-image-amd64";

/// A stock kernel and the modules to load, in order.
pub struct Kernel {
    /// `<package>_<version>`, e.g. `linux-image-6.1.0-56-amd64_6.1.192-2`.
    pub name: String,
    pub vmlinuz: PathBuf,
    pub modules: Vec<PathBuf>,
}

/// The current stock Debian kernel, from the cache or fetched into it.
pub fn debian_kernel() -> Kernel {
    assert_eq!(
        std::env::consts::ARCH,
        "x86_64",
        "the test VM is an x86_64 qemu guest with Debian's {KERNEL_PACKAGE}"
    );
    let cache = Path::new("/var/tmp/skiff-test-images");
    fs::create_dir_all(cache).expect("kernel cache dir");
    let mut refreshed = false;
    let (name, dir) = loop {
        let Some((package, version)) = kernel_package() else {
            assert!(
                !refreshed,
                "apt-cache knows no {KERNEL_PACKAGE}, even after apt-get update"
            );
            run(Command::new("apt-get").args(["update", "-qq"]));
            refreshed = true;
            continue;
        };
        let name = format!("{package}_{version}");
        let dir = cache.join(format!("kernel-{name}"));
        if dir.join("load-order").exists() {
            break (name, dir);
        }
        let staging = tempfile::tempdir_in(cache).expect("staging dir");
        match fetch_kernel(&package, &version, staging.path()) {
            Ok(()) => {
                let staged = staging.keep();
                if fs::rename(&staged, &dir).is_err() {
                    // Another run cached it meanwhile.
                    let _ = fs::remove_dir_all(&staged);
                }
                break (name, dir);
            }
            // Stale package lists name a version the archive no longer has.
            Err(e) if !refreshed => {
                eprintln!("{e}; refreshing the package lists");
                run(Command::new("apt-get").args(["update", "-qq"]));
                refreshed = true;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let order = fs::read_to_string(dir.join("load-order")).expect("cached kernel");
    Kernel {
        name,
        vmlinuz: dir.join("vmlinuz"),
        modules: order
            .lines()
            .map(|m| dir.join("modules").join(format!("{m}.ko")))
            .collect(),
    }
}

/// The kernel package `linux-image-amd64` depends on now, and its version; `None` when the
/// package lists do not know it.
fn kernel_package() -> Option<(String, String)> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", KERNEL_PACKAGE])
        .output()
        .expect("apt-cache (the test VM's kernel is Debian's)");
    let text = String::from_utf8_lossy(&out.stdout);
    let depends = text.lines().find_map(|l| l.strip_prefix("Depends: "))?;
    // `linux-image-6.1.0-56-amd64 (= 6.1.192-2)`
    let first = depends.split(',').next().expect("a dependency").trim();
    let (package, rest) = first
        .split_once(" (= ")
        .unwrap_or_else(|| panic!("unexpected Depends: {depends}"));
    Some((package.to_string(), rest.trim_end_matches(')').to_string()))
}

/// Downloads the package into `dir` and keeps `vmlinuz`, `modules/<name>.ko` and `load-order`.
/// `Err` when the download fails.
fn fetch_kernel(package: &str, version: &str, dir: &Path) -> Result<(), String> {
    let download = dir.join("download");
    fs::create_dir(&download).expect("download dir");
    let got = Command::new("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
        .arg(format!("{package}={version}"))
        .current_dir(&download)
        .output()
        .expect("apt-get");
    if !got.status.success() {
        return Err(format!(
            "apt-get download {package}={version}: {}",
            String::from_utf8_lossy(&got.stderr).trim()
        ));
    }
    let deb = fs::read_dir(&download)
        .expect("download dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the downloaded .deb");
    // Only what can hold the kernel and the modules the VM needs: ~50 of ~400 MB.
    let tree = download.join("tree");
    fs::create_dir(&tree).expect("tree dir");
    let mut unpack = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dpkg-deb");
    run(Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&tree)
        .args([
            "--wildcards",
            "./boot/vmlinuz-*",
            "*/modules/*/modules.builtin",
            "*/modules/*/kernel/drivers/virtio/*",
            "*/modules/*/kernel/net/9p/*",
            "*/modules/*/kernel/fs/*",
        ])
        .stdin(unpack.stdout.take().expect("pipe")));
    assert!(
        unpack.wait().expect("dpkg-deb").success(),
        "dpkg-deb --fsys-tarfile {}",
        deb.display()
    );

    let vmlinuz = only_entry(&tree.join("boot"));
    fs::copy(vmlinuz, dir.join("vmlinuz")).expect("vmlinuz");
    let modules_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d))
        .find(|d| d.is_dir())
        .expect("the package's modules");
    let modules_root = only_entry(&modules_root);
    let builtin: Vec<String> = fs::read_to_string(modules_root.join("modules.builtin"))
        .expect("modules.builtin")
        .lines()
        .filter_map(|l| Path::new(l).file_name())
        .map(|f| module_name(&f.to_string_lossy()))
        .collect();
    let mut found = Vec::new();
    find_modules(&modules_root.join("kernel"), &mut found);
    let mut order = Vec::new();
    for m in MODULES {
        load_order(m, &found, &builtin, &mut order);
    }
    fs::create_dir(dir.join("modules")).expect("modules dir");
    for name in &order {
        let path = &found.iter().find(|(n, _)| n == name).expect("found above").1;
        fs::write(dir.join("modules").join(format!("{name}.ko")), module_bytes(path)).expect("module");
    }
    fs::remove_dir_all(&download).expect("remove the download");
    fs::write(dir.join("load-order"), order.join("\n") + "\n").expect("load-order");
    Ok(())
}

/// The single entry of a directory (the kernel's version directory, its `vmlinuz`).
fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "one entry in {}: {entries:?}", dir.display());
    entries.into_iter().next().expect("one")
}

/// `9pnet_virtio.ko`, `9pnet-virtio.ko.xz` → `9pnet_virtio` (the kernel treats `-` as `_`).
fn module_name(file: &str) -> String {
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn find_modules(dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for e in fs::read_dir(dir).expect("modules dir").flatten() {
        let path = e.path();
        if path.is_dir() {
            find_modules(&path, out);
        } else if let Some(f) = path.file_name().map(|f| f.to_string_lossy().into_owned()) {
            if f.contains(".ko") {
                out.push((module_name(&f), path));
            }
        }
    }
}

/// Appends `name` to `order` after what it depends on (read from its `.modinfo`).
fn load_order(name: &str, found: &[(String, PathBuf)], builtin: &[String], order: &mut Vec<String>) {
    if order.iter().any(|o| o == name) || builtin.iter().any(|b| b == name) {
        return;
    }
    let path = &found
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("kernel module {name}: neither built in nor among the extracted ones"))
        .1;
    for dep in depends(&module_bytes(path)) {
        load_order(&dep, found, builtin, order);
    }
    order.push(name.to_string());
}

/// A module file's bytes (`.ko.xz` and `.ko.zst`, as newer Debian kernels ship them, unpacked).
fn module_bytes(path: &Path) -> Vec<u8> {
    let ext = path.extension().and_then(|e| e.to_str());
    match ext {
        Some("ko") => fs::read(path).expect("module"),
        Some(tool @ ("xz" | "zst")) => {
            let prog = if tool == "xz" { "xz" } else { "zstd" };
            let out = Command::new(prog).arg("-dc").arg(path).output().expect(prog);
            assert!(out.status.success(), "{prog} -dc {}", path.display());
            out.stdout
        }
        _ => panic!("unexpected module file {}", path.display()),
    }
}

/// The `depends=` of a module's `.modinfo` (NUL-separated `key=value` strings).
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &ko[at + key.len()..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How qemu runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` opens and a hardware KVM module (`kvm_intel`, `kvm_amd`) is loaded;
    /// otherwise TCG. A `/dev/kvm` from `kvm_pvm` alone (pagetable-based nested
    /// virtualisation, as on Firecracker-hosted CI machines) runs only guest kernels built for
    /// PVM: a stock kernel hangs at boot there. `SKIFF_VM_ACCEL=kvm|tcg` overrides.
    pub fn detect() -> Self {
        match std::env::var("SKIFF_VM_ACCEL").as_deref() {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            Ok(other) => panic!("SKIFF_VM_ACCEL={other}: kvm or tcg"),
            Err(_) => {}
        }
        let hardware = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|m| Path::new(m).exists());
        let opens = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
        if hardware && opens {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// A VM that powered off.
pub struct Booted {
    /// From start to power-off.
    pub took: Duration,
    /// What the kernel and the init wrote to the serial console.
    pub console: String,
}

/// Boots `kernel` with the host directory `share` (holding `job.sh`) writable at [`SHARE`],
/// and waits for the VM to power off (also what a failing init ends in). `Err` with the
/// serial console's output when qemu fails or `timeout` passes first (the VM is killed then).
pub fn boot(kernel: &Kernel, share: &Path, accel: Accel, timeout: Duration) -> Result<Booted, String> {
    assert!(share.join("job.sh").exists(), "the share holds job.sh");
    let work = tempfile::tempdir().expect("vm dir");
    let initrd = work.path().join("initrd.cpio");
    fs::write(&initrd, initramfs(kernel)).expect("initramfs");
    let console = work.path().join("console.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    match accel {
        Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => qemu.args(["-accel", "tcg", "-cpu", "max"]),
    };
    qemu.args([
        "-smp",
        "2",
        "-m",
        "2048",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(&initrd)
    // panic=-1: a failing init reboots at once, and -no-reboot makes that qemu's exit.
    .args(["-append", "console=ttyS0 cgroup_no_v1=all panic=-1 quiet"])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ])
    .arg("-virtfs")
    .arg(format!(
        "local,path={},mount_tag=out,security_model=none",
        share.display()
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(fs::File::create(work.path().join("qemu.log")).expect("qemu log"));
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64 (apt-get install qemu-system-x86; scripts/test.sh does): {e}"))?;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let qemu_log = fs::read_to_string(work.path().join("qemu.log")).unwrap_or_default();
    let console_text = fs::read_to_string(&console).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(Booted {
            took,
            console: console_text,
        }),
        Some(s) => Err(format!(
            "qemu exited with {s}: {qemu_log}\n--- console ---\n{console_text}"
        )),
        None => {
            let hint = if console_text.trim().is_empty() {
                "\n(the kernel wrote nothing: did it start at all? SKIFF_VM_ACCEL=tcg forces emulation)"
            } else {
                ""
            };
            Err(format!(
                "the VM ({accel:?}) did not power off within {timeout:?}{hint}\nqemu: {qemu_log}\n\
                 --- console ---\n{console_text}"
            ))
        }
    }
}

/// The initramfs (`newc` cpio): `/init`, `/bin/busybox` and the kernel's modules.
fn initramfs(kernel: &Kernel) -> Vec<u8> {
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "modules", "newroot", "proc"] {
        cpio.entry(d, 0o040755, 0, &[]);
    }
    cpio.entry("dev/console", 0o020600, 0x0501, &[]);
    cpio.entry(
        "bin/busybox",
        0o100755,
        0,
        &fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)"),
    );
    let mut names = Vec::new();
    for m in &kernel.modules {
        let name = m.file_name().expect("module file").to_string_lossy().into_owned();
        cpio.entry(&format!("modules/{name}"), 0o100644, 0, &fs::read(m).expect("module"));
        names.push(name);
    }
    cpio.entry("init", 0o100755, 0, init_script(&names).as_bytes());
    cpio.finish()
}

fn init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/busybox sh
# The test VM's first stage (see crates/skiff/tests/support/vm.rs).
B=/bin/busybox
R=/newroot
fail() {{ echo "vm init: $*"; $B poweroff -f; }}
for m in {modules}; do $B insmod /modules/$m || fail "insmod $m"; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot $R || fail "mount the host's root"
$B mount -t proc proc $R/proc || fail proc
$B mount -t sysfs sysfs $R/sys || fail sysfs
$B mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail cgroup2
for c in $($B cat $R/sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > $R/sys/fs/cgroup/cgroup.subtree_control || fail "enable the $c controller"
done
$B mount -t devtmpfs devtmpfs $R/dev || fail devtmpfs
$B mkdir -p $R/dev/pts $R/dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts || fail devpts
$B mount -t tmpfs shm $R/dev/shm || fail shm
$B mount -t tmpfs tmpfs $R/tmp || fail /tmp
$B mount -t tmpfs tmpfs $R/run || fail /run
$B mkdir -p $R{share}
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out $R{share} || fail "mount the share"
exec $B switch_root $R /bin/busybox sh {share}/job.sh
"#,
        modules = modules.join(" "),
        share = SHARE,
    )
}

/// A `newc` cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0, // mtime
            u32::try_from(data.len()).expect("initramfs file under 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev >> 8,
            rdev & 0xff,
            u32::try_from(name.len() + 1).expect("name"),
            0, // check
        ];
        write!(self.out, "070701").expect("write to a Vec");
        for f in fields {
            write!(self.out, "{f:08x}").expect("write to a Vec");
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }
}
