//! Pod address management for one node's pod CIDR, kept on disk like CNI's `host-local`: one
//! file per address in use, created exclusively, naming its owner. An address is never handed
//! out twice — not by concurrent callers, not across agent restarts — and is free again once
//! released.

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use crate::NetError;

/// Addresses of one pod CIDR. The network address, the gateway (the first host address, on the
/// bridge) and the broadcast address are never handed out.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Net,
    dir: PathBuf,
    /// Where the next search starts: addresses are handed out round the range, so a released
    /// one is not reused at once (connections to the old pod die rather than reach a new one).
    next: Mutex<u32>,
}

impl Ipam {
    /// Addresses of `cidr`, recorded under `dir` (created if missing).
    pub fn new(cidr: Ipv4Net, dir: &Path) -> Result<Ipam, NetError> {
        if cidr.prefix_len() > 30 {
            return Err(NetError::Config(format!(
                "pod CIDR {cidr} is too small: it needs room for a gateway and pods (at most /30)"
            )));
        }
        let dir = dir.join(cidr.trunc().to_string().replace('/', "_"));
        std::fs::create_dir_all(&dir).map_err(|source| NetError::Io {
            op: "create IPAM directory",
            path: dir.clone(),
            source,
        })?;
        let last = std::fs::read_to_string(dir.join("last-reserved"))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .unwrap_or(0);
        Ok(Ipam {
            cidr: cidr.trunc(),
            dir,
            next: Mutex::new(last.wrapping_add(1)),
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway: the first host address of the range.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    fn first(&self) -> u32 {
        u32::from(self.cidr.network()) + 2
    }

    fn last(&self) -> u32 {
        u32::from(self.cidr.broadcast()) - 1
    }

    fn path_of(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// The address `owner` holds, if any.
    pub fn held_by(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    /// Every address in use and its owner.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| NetError::Io {
            op: "list IPAM directory",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(ip) = e.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// An address for `owner`: the one it holds already, or a free one.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetError> {
        if owner.is_empty() || owner.contains('\n') {
            return Err(NetError::Config(format!("invalid IPAM owner {owner:?}")));
        }
        if let Some(ip) = self.held_by(owner)? {
            return Ok(ip);
        }
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let (first, last) = (self.first(), self.last());
        let used: HashSet<Ipv4Addr> = self.allocations()?.into_iter().map(|(ip, _)| ip).collect();
        let size = last - first + 1;
        let start = if (first..=last).contains(&*next) { *next } else { first };
        for i in 0..size {
            let candidate = first + (start - first + i) % size;
            let ip = Ipv4Addr::from(candidate);
            if used.contains(&ip) {
                continue;
            }
            // Exclusive create: a second agent process (or a stale view) can never take it too.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path_of(ip))
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes()).map_err(|source| NetError::Io {
                        op: "record address owner",
                        path: self.path_of(ip),
                        source,
                    })?;
                    f.sync_all().ok();
                    *next = candidate.wrapping_add(1);
                    let _ = std::fs::write(self.dir.join("last-reserved"), ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(NetError::Io {
                        op: "reserve address",
                        path: self.path_of(ip),
                        source,
                    })
                }
            }
        }
        Err(NetError::Exhausted(self.cidr))
    }

    /// Free whatever `owner` holds. Releasing twice is not an error.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let Some(ip) = self.held_by(owner)? else {
            return Ok(None);
        };
        match std::fs::remove_file(self.path_of(ip)) {
            Ok(()) => Ok(Some(ip)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NetError::Io {
                op: "release address",
                path: self.path_of(ip),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().expect("cidr")
    }

    #[test]
    fn hands_out_each_address_once_and_skips_gateway_and_broadcast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::new(cidr("10.42.7.0/29"), dir.path()).expect("ipam");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 7, 1));
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("pod-{i}")).expect("address"))
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 42, 7, h)).collect();
        assert_eq!(got, want);
        match ipam.allocate("pod-5") {
            Err(NetError::Exhausted(c)) => assert_eq!(c, cidr("10.42.7.0/29")),
            other => panic!("expected exhaustion, got {other:?}"),
        }
        // The same owner asking again gets the address it holds.
        assert_eq!(ipam.allocate("pod-3").expect("again"), Ipv4Addr::new(10, 42, 7, 5));
        assert_eq!(
            ipam.release("pod-3").expect("release"),
            Some(Ipv4Addr::new(10, 42, 7, 5))
        );
        assert_eq!(ipam.release("pod-3").expect("release twice"), None);
        assert_eq!(ipam.allocate("pod-6").expect("freed"), Ipv4Addr::new(10, 42, 7, 5));
    }

    #[test]
    fn survives_restarts_and_does_not_reuse_a_released_address_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Ipam::new(cidr("10.42.0.0/24"), dir.path()).expect("ipam");
        let first = a.allocate("a").expect("a");
        let second = a.allocate("b").expect("b");
        a.release("a").expect("release");
        drop(a);
        let b = Ipam::new(cidr("10.42.0.0/24"), dir.path()).expect("reopened");
        assert_eq!(b.held_by("b").expect("held"), Some(second));
        let third = b.allocate("c").expect("c");
        assert!(third != first && third != second, "{third} reused");
        assert_eq!(b.allocations().expect("list").len(), 2);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Two instances over one directory, as two agent processes would be.
        let a = Arc::new(Ipam::new(cidr("10.42.1.0/24"), dir.path()).expect("ipam"));
        let b = Arc::new(Ipam::new(cidr("10.42.1.0/24"), dir.path()).expect("ipam"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ipam = if t % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| ipam.allocate(&format!("t{t}-{i}")).expect("address"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 200);
        assert_eq!(distinct.len(), 200, "an address was handed out twice");
    }

    #[test]
    fn refuses_bad_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Ipam::new(cidr("10.42.0.0/31"), dir.path()),
            Err(NetError::Config(_))
        ));
        let ipam = Ipam::new(cidr("10.42.0.0/24"), dir.path()).expect("ipam");
        assert!(matches!(ipam.allocate(""), Err(NetError::Config(_))));
    }
}
