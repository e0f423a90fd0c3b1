//! `kubectl logs` on the node: a container's CRI log files (rotated ones first) rendered as the
//! kubelet renders them — pieces of long lines joined, `--timestamps`, `--tail`, `--since`,
//! `--limit-bytes` — and `--follow` until the container has exited and its log is drained.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use skiff_client::streams::{
    ExecRequest, ExecSession, LogRequest, LogStream, NodeStreams, PortConnection, PortForwardRequest,
};
use skiff_runtime::shim::log::{join_lines, parse, Pending};
use skiff_runtime::{ContainerManager, ShimStatus};

/// The streaming side of this node's agent.
pub struct AgentStreams {
    pub log_dir: PathBuf,
    pub containers: ContainerManager,
    /// Where pod network namespaces are bound (for port forwarding).
    pub netns_dir: PathBuf,
}

impl AgentStreams {
    /// The streams of the agent configured by `cfg` (its log directory and containers).
    pub fn new(cfg: &crate::AgentConfig) -> anyhow::Result<AgentStreams> {
        let store = skiff_runtime::ImageStore::open(&cfg.data_dir)?;
        let containers = ContainerManager::new(
            &cfg.data_dir,
            store,
            cfg.runtime.clone(),
            &cfg.run_dir.join("runtime"),
            &cfg.exe,
        )?;
        Ok(AgentStreams {
            log_dir: cfg.log_dir.clone(),
            containers,
            netns_dir: skiff_net::node::netns_dir(&cfg.run_dir),
        })
    }
}

/// Where a container attempt's log is (the shim writes it there).
pub fn log_path(log_dir: &Path, ns: &str, pod: &str, uid: &str, container: &str, attempt: u32) -> PathBuf {
    log_dir
        .join(format!("{ns}_{pod}_{uid}"))
        .join(container)
        .join(format!("{attempt}.log"))
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

fn render(time: &str, text: &[u8], timestamps: bool) -> String {
    let text = String::from_utf8_lossy(text);
    if timestamps {
        format!("{time} {text}\n")
    } else {
        format!("{text}\n")
    }
}

/// The log as it is now: every line from the rotated files and the current one, filtered;
/// and where the current file ends (for `--follow`).
pub fn read_now(path: &Path, req: &LogRequest) -> (String, u64, Pending) {
    let since: Option<DateTime<Utc>> = req
        .since_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let mut files: Vec<PathBuf> = (1..64).map(|n| rotated(path, n)).take_while(|p| p.exists()).collect();
    files.reverse();
    let mut pending = Pending::default();
    let mut all = Vec::new();
    let mut end = 0;
    for f in files.iter().chain(std::iter::once(&path.to_path_buf())) {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        if f == path {
            // Only complete lines count; a line being written is picked up by --follow.
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            end = complete as u64;
            all.extend(join_lines(&parse(&text[..complete]), &mut pending));
        } else {
            all.extend(join_lines(&parse(&text), &mut pending));
        }
    }
    let keep = |t: &str| {
        since.is_none_or(|s| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc) >= s)
                .unwrap_or(true)
        })
    };
    let mut chosen: Vec<&(String, Vec<u8>)> = all.iter().filter(|(t, _)| keep(t)).collect();
    if let Some(n) = req.tail_lines {
        let skip = chosen.len().saturating_sub(n);
        chosen.drain(..skip);
    }
    let out: String = chosen.iter().map(|(t, x)| render(t, x, req.timestamps)).collect();
    (out, end, pending)
}

struct Follow {
    path: PathBuf,
    offset: u64,
    pending: Pending,
    req: LogRequest,
    id: String,
    containers: ContainerManager,
    sent: usize,
    first: Option<String>,
    done: bool,
}

impl Follow {
    fn cap(&mut self, mut s: String) -> String {
        if let Some(limit) = self.req.limit_bytes {
            let left = limit.saturating_sub(self.sent);
            if s.len() >= left {
                let mut cut = left;
                while cut > 0 && !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                self.done = true;
            }
        }
        self.sent += s.len();
        s
    }

    fn exited(&self) -> bool {
        self.containers
            .state(&self.id)
            .map(|s| matches!(s.status, ShimStatus::Exited | ShimStatus::Failed))
            .unwrap_or(true)
    }

    /// New complete lines appended since the last read.
    fn read_more(&mut self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        if size < self.offset {
            // Rotated: the new file starts over.
            self.offset = 0;
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return String::new();
        }
        let mut buf = String::new();
        if f.read_to_string(&mut buf).is_err() {
            return String::new();
        }
        let complete = buf.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        join_lines(&parse(&buf[..complete]), &mut self.pending)
            .iter()
            .map(|(t, x)| render(t, x, self.req.timestamps))
            .collect()
    }
}

impl NodeStreams for AgentStreams {
    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<LogStream, String>> {
        let opened = self.open_log(req);
        Box::pin(async move { opened })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, String>> {
        crate::exec::exec(self.containers.clone(), req)
    }

    fn attach(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, String>> {
        crate::exec::attach(self.containers.clone(), req)
    }

    fn port_forward(&self, req: PortForwardRequest) -> BoxFuture<'static, Result<PortConnection, String>> {
        crate::exec::port_forward(self.netns_dir.clone(), req)
    }
}

impl AgentStreams {
    /// The container's log, read now and followed if asked.
    fn open_log(&self, req: LogRequest) -> Result<LogStream, String> {
        let path = log_path(
            &self.log_dir,
            &req.namespace,
            &req.pod,
            &req.uid,
            &req.container,
            req.attempt,
        );
        if !path.exists() {
            return Err(format!(
                "no log of container {:?} (attempt {}) of pod {:?} on this node",
                req.container, req.attempt, req.pod
            ));
        }
        let (now, offset, pending) = read_now(&path, &req);
        let mut st = Follow {
            id: format!("{}-{}-{}", req.uid, req.container, req.attempt),
            path,
            offset,
            pending,
            containers: self.containers.clone(),
            sent: 0,
            first: None,
            done: false,
            req,
        };
        st.first = Some(st.cap(now));
        let stream = futures::stream::unfold(st, |mut st| async move {
            if let Some(first) = st.first.take() {
                if !first.is_empty() {
                    return Some((Ok(Bytes::from(first)), st));
                }
            }
            if st.done || !st.req.follow {
                return None;
            }
            loop {
                // Read before checking the exit, so nothing written before it is lost.
                let exited = st.exited();
                let more = st.read_more();
                if !more.is_empty() {
                    let more = st.cap(more);
                    return Some((Ok(Bytes::from(more)), st));
                }
                if exited {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> LogRequest {
        LogRequest {
            container: "c".into(),
            ..Default::default()
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn renders_lines_joining_pieces_across_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        write(&rotated(&path, 2), "2026-11-27T10:00:00Z stdout F one\n");
        write(
            &rotated(&path, 1),
            "2026-11-27T10:00:01Z stdout F two\n2026-11-27T10:00:02Z stderr P thr\n",
        );
        write(&path, "2026-11-27T10:00:03Z stderr F ee\n2026-11-27T10:00:04Z stdout F four\n2026-11-27T10:00:05Z stdout F half-writ");
        let (out, end, _) = read_now(&path, &req());
        assert_eq!(out, "one\ntwo\nthree\nfour\n");
        assert_eq!(
            end as usize,
            std::fs::read_to_string(&path).expect("read").rfind('\n').expect("nl") + 1
        );
        let (out, _, _) = read_now(
            &path,
            &LogRequest {
                tail_lines: Some(2),
                timestamps: true,
                ..req()
            },
        );
        assert_eq!(out, "2026-11-27T10:00:02Z three\n2026-11-27T10:00:04Z four\n");
        let since = LogRequest {
            since_time: Some("2026-11-27T10:00:01Z".into()),
            ..req()
        };
        assert_eq!(read_now(&path, &since).0, "two\nthree\nfour\n");
        assert_eq!(
            read_now(
                &path,
                &LogRequest {
                    tail_lines: Some(0),
                    ..req()
                }
            )
            .0,
            ""
        );
    }
}
