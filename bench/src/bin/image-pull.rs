//! Pull-and-unpack throughput of a ~100 MB image from a registry on loopback (the node agent
//! issue's benchmark), against `skopeo copy` + `umoci unpack` of the same image in the same
//! run.
//!
//! - The image: busybox plus four layers of 25 MB each (half random bytes, half text, as real
//!   layers mix binaries and text), gzip-compressed, pushed to Debian's `docker-registry`
//!   started on 127.0.0.1.
//! - Skiff: what the agent does before an image's first container: `Puller::pull` into a fresh
//!   store, then every layer unpacked into its snapshot (`ImageStore::overlay_lowerdirs`).
//! - Baseline: `skopeo copy docker://… oci:DIR:TAG` then `umoci unpack --image DIR:TAG`.
//! - Runs alternate (skiff, baseline, skiff, …), each into fresh directories; medians.
//!
//! `image-pull [--runs 5]` (as root: unpacking keeps file owners; installs skopeo and umoci
//! with apt when missing).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_runtime::testing::{self, layer, Compression, ManifestKind, Registry};
use skiff_runtime::{DockerCredentials, ImageRef, ImageStore, NoProgress, Platform, Puller, RegistriesConfig};

const LAYERS: usize = 4;
const LAYER_BYTES: usize = 25 * 1024 * 1024;
const FILES_PER_LAYER: usize = 10;

/// A layer of `LAYER_BYTES` in `FILES_PER_LAYER` files: half random, half text.
fn big_layer(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        // xorshift64*: fast, deterministic, incompressible enough.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545F4914F6CDD1D)
    };
    let per_file = LAYER_BYTES / FILES_PER_LAYER;
    layer(|l| {
        l.dir(&format!("data{seed}"), 0o755);
        for f in 0..FILES_PER_LAYER {
            let mut data = Vec::with_capacity(per_file);
            if f % 2 == 0 {
                while data.len() < per_file {
                    data.extend_from_slice(&next().to_le_bytes());
                }
            } else {
                let mut line = 0u64;
                while data.len() < per_file {
                    data.extend_from_slice(
                        format!(
                            "{line:08} the quick brown fox jumps over the lazy dog {}\n",
                            next() % 1000
                        )
                        .as_bytes(),
                    );
                    line += 1;
                }
            }
            data.truncate(per_file);
            l.file(&format!("data{seed}/file{f}"), &data, 0o644);
        }
    })
}

fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = ["skopeo", "umoci", "docker-registry"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("installing {missing:?} with apt-get");
    let st = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get")?;
    if !st.success() {
        bail!("could not install {missing:?}");
    }
    Ok(())
}

fn dir_bytes(p: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(p).output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure_tools()?;
    let mut layers = vec![(
        testing::layer(|l| {
            l.dir("bin", 0o755).busybox("bin/busybox");
        }),
        Compression::Gzip,
    )];
    for i in 0..LAYERS {
        layers.push((big_layer(i as u64 + 1), Compression::Gzip));
    }
    let image = testing::image(ManifestKind::Oci, &Platform::host().architecture, &layers);
    let compressed: usize = image.layers.iter().map(|l| l.1.len()).sum();
    let uncompressed: usize = image.layers.iter().map(|l| l.2.len()).sum();
    let registry = Registry::start(None);
    registry.push("bench/big", "1", &image).await;
    let reference = format!("{}/bench/big:1", registry.addr);
    println!(
        "image {reference}: {} layers, {:.1} MB compressed, {:.1} MB of layer tars",
        layers.len(),
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6
    );
    // A registry on loopback is plain HTTP by default, as containerd treats localhost.
    let registries = RegistriesConfig::default();

    let work = tempfile::tempdir()?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut unpacked = (0u64, 0u64);
    for run in 0..runs {
        // Skiff: pull into a fresh store, unpack every layer.
        let data = work.path().join(format!("skiff-{run}"));
        let store = ImageStore::open(&data)?;
        let t = Instant::now();
        let rec = Puller::new(store.clone(), registries.clone())
            .pull(
                &ImageRef::parse(&reference)?,
                &DockerCredentials::default(),
                &NoProgress,
            )
            .await?;
        let dirs = {
            let (store, rec) = (store.clone(), rec.clone());
            tokio::task::spawn_blocking(move || store.overlay_lowerdirs(&rec)).await??
        };
        ours.push(t.elapsed());
        unpacked.0 = dirs.iter().map(|d| dir_bytes(d)).sum();
        // Baseline: skopeo copy + umoci unpack.
        let oci = work.path().join(format!("oci-{run}"));
        let bundle = work.path().join(format!("bundle-{run}"));
        let t = Instant::now();
        let st = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:big", oci.display()))
            .status()?;
        if !st.success() {
            bail!("skopeo copy failed");
        }
        let st = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:big", oci.display()))
            .arg(&bundle)
            .stdout(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            bail!("umoci unpack failed");
        }
        theirs.push(t.elapsed());
        unpacked.1 = dir_bytes(&bundle.join("rootfs"));
        println!(
            "run {run}: skiff {:.0} ms, skopeo+umoci {:.0} ms",
            ours[run].as_secs_f64() * 1e3,
            theirs[run].as_secs_f64() * 1e3
        );
        for d in [&data, &oci, &bundle] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let (m_ours, m_theirs) = (median(ours), median(theirs));
    let mb = compressed as f64 / 1e6;
    println!(
        "unpacked: skiff {:.1} MB, umoci {:.1} MB",
        unpacked.0 as f64 / 1e6,
        unpacked.1 as f64 / 1e6
    );
    println!(
        "median of {runs}: skiff pull+unpack {:.0} ms ({:.0} MB/s of compressed image), skopeo copy + umoci unpack {:.0} ms ({:.0} MB/s); skiff takes {:.2}x the baseline's time",
        m_ours.as_secs_f64() * 1e3,
        mb / m_ours.as_secs_f64(),
        m_theirs.as_secs_f64() * 1e3,
        mb / m_theirs.as_secs_f64(),
        m_ours.as_secs_f64() / m_theirs.as_secs_f64()
    );
    Ok(())
}
