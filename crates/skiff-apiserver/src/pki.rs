//! The cluster's certificates: a CA made on first start, the serving certificate and the
//! admin client certificate it signs, and the key that signs service-account tokens.
//! Everything is kept in `<data-dir>/tls` and reused.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The ECDSA P-256 key (PKCS#8 PEM, `sa.key`) that signs service-account tokens. Made once:
    /// a new key would invalidate every token already handed out.
    pub service_account_key_pem: String,
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn days(n: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(n)
}

fn leaf(cn: &str, org: Option<&str>, client: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p.not_before = days(-1);
    p.not_after = days(365 * 10);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    p
}

impl Pki {
    /// Load the PKI from `dir`, creating whatever is missing. `sans` are the serving
    /// certificate's extra names and addresses (the serving certificate is remade when they
    /// change).
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_cert = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        let (ca_pem, ca_key_pem) = if ca_cert.exists() && ca_key.exists() {
            (std::fs::read_to_string(&ca_cert)?, std::fs::read_to_string(&ca_key)?)
        } else {
            let key = KeyPair::generate().context("generating the CA key")?;
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(
                DnType::CommonName,
                format!("skiff-ca@{}", time::OffsetDateTime::now_utc().unix_timestamp()),
            );
            p.distinguished_name = dn;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            p.not_before = days(-1);
            p.not_after = days(365 * 10);
            let cert = p.self_signed(&key).context("self-signing the CA")?;
            write_private(&ca_key, &key.serialize_pem())?;
            std::fs::write(&ca_cert, cert.pem())?;
            (cert.pem(), key.serialize_pem())
        };
        let ca_signing = KeyPair::from_pem(&ca_key_pem).context("reading the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_signing).context("reading the CA certificate")?;

        let sans_file = dir.join("serving.sans");
        let mut all_sans: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "10.43.0.1".into(),
        ];
        for s in sans {
            if !all_sans.contains(s) {
                all_sans.push(s.clone());
            }
        }
        let serving_cert = dir.join("serving.crt");
        let serving_key = dir.join("serving.key");
        let sans_now = all_sans.join(",");
        let fresh = serving_cert.exists()
            && serving_key.exists()
            && std::fs::read_to_string(&sans_file).is_ok_and(|s| s == sans_now);
        if !fresh {
            let key = KeyPair::generate()?;
            let mut p = leaf("skiff-apiserver", None, false);
            p.subject_alt_names = all_sans
                .iter()
                .map(|s| match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => s.clone().try_into().map(SanType::DnsName),
                })
                .collect::<Result<_, _>>()
                .context("serving certificate names")?;
            let cert = p.signed_by(&key, &issuer).context("signing the serving certificate")?;
            write_private(&serving_key, &key.serialize_pem())?;
            std::fs::write(&serving_cert, cert.pem())?;
            std::fs::write(&sans_file, &sans_now)?;
        }
        let admin_cert = dir.join("admin.crt");
        let admin_key = dir.join("admin.key");
        if !(admin_cert.exists() && admin_key.exists()) {
            let key = KeyPair::generate()?;
            let cert = leaf("system:admin", Some("system:masters"), true)
                .signed_by(&key, &issuer)
                .context("signing the admin certificate")?;
            write_private(&admin_key, &key.serialize_pem())?;
            std::fs::write(&admin_cert, cert.pem())?;
        }
        let sa_key = dir.join("sa.key");
        if !sa_key.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("generating the service-account signing key")?;
            write_private(&sa_key, &key.serialize_pem())?;
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            serving_cert_pem: std::fs::read_to_string(&serving_cert)?,
            serving_key_pem: std::fs::read_to_string(&serving_key)?,
            admin_cert_pem: std::fs::read_to_string(&admin_cert)?,
            admin_key_pem: std::fs::read_to_string(&admin_key)?,
            service_account_key_pem: std::fs::read_to_string(&sa_key)
                .with_context(|| format!("reading {}", sa_key.display()))?,
        })
    }

    /// A kubeconfig for the admin, pointing at `server`.
    pub fn kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_pem),
            b64(&self.admin_cert_pem),
            b64(&self.admin_key_pem)
        )
    }
}
