//! Skiff's runtime side. Images: references and pull policy, a content-addressed store of
//! verified blobs, pulls from OCI/Docker registries (mirrors, auth and TLS from a
//! k3s-compatible `registries.yaml`, multi-arch resolution), imports of docker-archive and
//! OCI-archive tarballs, layer unpacking with OCI whiteouts into per-layer snapshots (overlayfs
//! lowerdirs) or a copied root filesystem, and image garbage collection. Containers: OCI bundles
//! from Kubernetes container specs ([`bundle`]), root filesystems over the image's snapshots
//! ([`rootfs`]), pod sandboxes that hold a pod's namespaces without a pause container
//! ([`sandbox`]), the OCI runtime contract that drives runc, crun, youki or Skiff's built-in
//! runtime through one command line ([`oci`]), and the per-container shim that holds a
//! container's stdio, writes its CRI log and records its exit so that it outlives the agent
//! ([`shim`]).
//!
//! It owns everything under `<data-dir>/images` and the containers' directories the agent gives
//! it. It must never depend on the API server, the store or any Kubernetes client (Kubernetes
//! *types* from k8s-openapi are its input), nor on the built-in runtime's crate
//! (`skiff-builtin-runtime`, libcontainer): it runs that through the contract, in a process of
//! its own. The agent asks it for images and containers and turns its errors into pod status
//! (`ErrImagePull` with [`PullError::reason`], `CreateContainerConfigError` from
//! [`BundleError`], `CreateContainerError` from [`ShimError`]).

pub mod bundle;
pub mod containers;
pub mod content;
pub mod credentials;
pub mod gc;
pub mod import;
pub mod io_error;
pub mod oci;
pub mod platform;
pub mod pull;
pub mod qos;
pub mod quantity;
pub mod reference;
pub mod registries;
pub mod rootfs;
pub mod sandbox;
pub mod shim;
pub mod store;
pub mod unpack;

pub use bundle::{container_spec, BundleError, ContainerInput, NamespaceMode, PodContext};
pub use containers::{ContainerError, ContainerImage, ContainerManager, ContainerRequest, ImagesInUse};
pub use content::{ContentError, ContentStore, Digest};
pub use credentials::{Credential, DockerCredentials};
pub use gc::{
    bytes_to_free, collect_garbage, select_for_removal, DiskUsage, GcImage, GcPolicy, GcPolicyError, GcReport, ImageGc,
};
pub use import::{import_archive, ImportError};
pub use io_error::IoError;
pub use oci::{ContainerState, ContainerStdio, OciRuntime, RuntimeError, RuntimeSelector};
pub use platform::Platform;
pub use pull::{EndpointError, NoProgress, PullError, PullProgress, Puller};
pub use reference::{ImageRef, NeverPullError, PullPolicy, ReferenceError};
pub use registries::{RegistriesConfig, RegistriesError};
pub use rootfs::{Rootfs, RootfsError, RootfsKind, RootfsMode};
pub use sandbox::{PodSandbox, SandboxError, SandboxOptions};
pub use shim::{Adoption, ShimConfig, ShimError, ShimState, ShimStatus};
pub use store::{ImageRecord, ImageStore, LayerRecord, PruneReport, StoreError};
pub use unpack::{apply_layer, UnpackError, UnpackOptions, WhiteoutMode};

#[cfg(feature = "test-support")]
pub mod testing;
