//! `skiff image ls|pull|import|rm`: the node's image store from the command line, as `crictl`
//! and `ctr images` are on a k3s node.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use skiff_runtime::{DockerCredentials, ImageRef, ImageStore, PullProgress, Puller, RegistriesConfig};

/// Default `--private-registry`, used when it exists.
const DEFAULT_REGISTRIES: &str = "/etc/skiff/registries.yaml";

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Where Skiff keeps its state: the same as `skiff server --data-dir` (or `skiff agent`),
    /// whose node agent runs containers from these images (<data-dir>/agent/images).
    #[arg(
        long,
        short = 'd',
        default_value = "/var/lib/skiff",
        env = "SKIFF_DATA_DIR",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// List images: REPOSITORY, TAG, DIGEST, IMAGE ID, SIZE.
    #[command(alias = "list")]
    Ls {
        /// Only print image IDs.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Pull an image from its registry (or a mirror from --private-registry).
    Pull {
        /// Image reference, e.g. busybox:1.36 or registry.local:5000/app@sha256:…
        image: String,
        /// k3s-style registries.yaml with mirrors and per-registry auth/TLS
        /// (default: /etc/skiff/registries.yaml when it exists).
        #[arg(long, env = "SKIFF_PRIVATE_REGISTRY")]
        private_registry: Option<PathBuf>,
        /// Credentials for the image's registry, USERNAME:PASSWORD.
        #[arg(long)]
        creds: Option<String>,
        /// A docker config.json / .dockerconfigjson with registry credentials.
        #[arg(long)]
        auth_file: Option<PathBuf>,
    },
    /// Import docker-archive (`docker save`) or OCI-archive tarballs.
    Import {
        /// Archive files (optionally gzip- or zstd-compressed).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove images by name or ID, and the content nothing else uses.
    #[command(alias = "rmi")]
    Rm {
        /// Image names or IDs.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

pub async fn run(args: ImageArgs) -> Result<()> {
    // The node agent's store (`AgentConfig::data_dir` is `<data-dir>/agent`).
    let data_dir = args.data_dir.join("agent");
    let store = {
        let d = data_dir.clone();
        tokio::task::spawn_blocking(move || ImageStore::open(&d))
            .await?
            .map_err(|e| anyhow::anyhow!("opening the image store in {}: {e}", data_dir.display()))?
    };
    match args.command {
        ImageCommand::Ls { quiet } => ls(&store, quiet),
        ImageCommand::Pull {
            image,
            private_registry,
            creds,
            auth_file,
        } => pull(store, &image, private_registry, creds, auth_file).await,
        ImageCommand::Import { files } => tokio::task::spawn_blocking(move || import(&store, &files)).await?,
        ImageCommand::Rm { images } => tokio::task::spawn_blocking(move || rm(&store, &images)).await?,
    }
}

/// Library errors already carry their causes in their message; print it once.
fn plain(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn ls(store: &ImageStore, quiet: bool) -> Result<()> {
    let images = store.list().map_err(plain)?;
    if quiet {
        let mut seen = std::collections::HashSet::new();
        for i in images {
            if seen.insert(i.config.clone()) {
                println!("{}", i.config);
            }
        }
        return Ok(());
    }
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "DIGEST".into(),
        "IMAGE ID".into(),
        "SIZE".into(),
    ]];
    for i in images {
        let (repo, tag) = i.repository_and_tag();
        rows.push([
            repo,
            tag,
            i.repo_digest.short().to_string(),
            i.config.short().to_string(),
            human_size(i.size),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c == 4 {
                    v.clone()
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

/// Sizes as crictl prints them (decimal units, four significant digits).
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    let decimals = if v < 10.0 {
        3
    } else if v < 100.0 {
        2
    } else {
        1
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", units[u])
}

struct Bar {
    bar: indicatif::ProgressBar,
}

impl PullProgress for Bar {
    fn resolved(&self, image: &str, blobs: &[(skiff_runtime::Digest, u64, bool)]) {
        let missing: u64 = blobs.iter().filter(|b| !b.2).map(|b| b.1).sum();
        self.bar.set_length(missing);
        self.bar.set_message(format!(
            "{image} ({} of {} blobs to fetch)",
            blobs.iter().filter(|b| !b.2).count(),
            blobs.len()
        ));
    }
    fn downloaded(&self, _blob: &skiff_runtime::Digest, bytes: u64) {
        self.bar.inc(bytes);
    }
}

fn registries(path: Option<PathBuf>) -> Result<RegistriesConfig> {
    let path = match path {
        Some(p) => p,
        None if Path::new(DEFAULT_REGISTRIES).exists() => PathBuf::from(DEFAULT_REGISTRIES),
        None => return Ok(RegistriesConfig::default()),
    };
    RegistriesConfig::load(&path).map_err(plain)
}

async fn pull(
    store: ImageStore,
    image: &str,
    private_registry: Option<PathBuf>,
    creds: Option<String>,
    auth_file: Option<PathBuf>,
) -> Result<()> {
    let reference = ImageRef::parse(image).map_err(plain)?;
    let cfg = registries(private_registry)?;
    let mut credentials = DockerCredentials::none();
    if let Some(c) = creds {
        let (user, pass) = c.split_once(':').context("--creds must be USERNAME:PASSWORD")?;
        credentials.insert(
            reference.registry(),
            skiff_runtime::Credential::Basic {
                username: user.to_string(),
                password: pass.to_string(),
            },
        );
    }
    if let Some(f) = auth_file {
        let json = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        credentials
            .add_json(&json)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg}\n  [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(format!("resolving {reference}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let progress = Bar { bar };
    let puller = Puller::new(store, cfg);
    let res = puller.pull(&reference, &credentials, &progress).await;
    progress.bar.finish_and_clear();
    let rec = res.map_err(plain)?;
    println!("Image is up to date for {} ({})", rec.name, rec.config);
    Ok(())
}

fn import(store: &ImageStore, files: &[PathBuf]) -> Result<()> {
    let platform = skiff_runtime::Platform::host();
    for f in files {
        let recs = skiff_runtime::import_archive(store, f, &platform).map_err(plain)?;
        for r in recs {
            println!("Imported {} ({})", r.name, r.config);
        }
    }
    Ok(())
}

fn rm(store: &ImageStore, images: &[String]) -> Result<()> {
    let mut failed = 0;
    for i in images {
        match store.remove(i) {
            Ok(removed) => {
                for r in removed {
                    println!("Deleted: {}", r.name);
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} image(s) not removed", images.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_like_crictl() {
        assert_eq!(super::human_size(0), "0B");
        assert_eq!(super::human_size(999), "999B");
        assert_eq!(super::human_size(2_154_321), "2.154MB");
        assert_eq!(super::human_size(845_000), "845kB");
        assert_eq!(super::human_size(12_340_000_000), "12.34GB");
    }
}
