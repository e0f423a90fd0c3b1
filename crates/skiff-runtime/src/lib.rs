//! Skiff's runtime side, images first: references and pull policy, a content-addressed store
//! of verified blobs, pulls from OCI/Docker registries (mirrors, auth and TLS from a
//! k3s-compatible `registries.yaml`, multi-arch resolution), imports of docker-archive and
//! OCI-archive tarballs, layer unpacking with OCI whiteouts into per-layer snapshots (overlayfs
//! lowerdirs) or a copied root filesystem, and image garbage collection. Containers through the
//! OCI runtime contract come next, in this crate.
//!
//! It owns everything under `<data-dir>/images`. It must never depend on the API server, the
//! store or any Kubernetes client: the agent asks it for images and turns its errors into pod
//! status (`ErrImagePull` with [`PullError::reason`]).

pub mod bundle;
pub mod content;
pub mod credentials;
pub mod gc;
pub mod import;
pub mod oci;
pub mod platform;
pub mod pull;
pub mod quantity;
pub mod reference;
pub mod registries;
pub mod rootfs;
pub mod shim;
pub mod store;
pub mod unpack;

pub use content::{ContentError, ContentStore, Digest};
pub use credentials::{Credential, DockerCredentials};
pub use gc::{collect_garbage, select_for_removal, DiskUsage, GcImage, GcPolicy, GcReport};
pub use import::{import_archive, ImportError};
pub use platform::Platform;
pub use pull::{EndpointError, NoProgress, PullError, PullProgress, Puller};
pub use reference::{ImageRef, NeverPullError, PullPolicy, ReferenceError};
pub use registries::{RegistriesConfig, RegistriesError};
pub use store::{ImageRecord, ImageStore, LayerRecord, PruneReport, StoreError};
pub use unpack::{apply_layer, UnpackError, UnpackOptions, WhiteoutMode};

#[cfg(feature = "test-support")]
pub mod testing;
