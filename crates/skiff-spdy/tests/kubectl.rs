//! Real kubectl 1.27 (SPDY is its only transport for exec and port-forward) against a stub
//! HTTP/1.1 server that upgrades to SPDY/3.1 and serves the streams with this crate.
//!
//! The stub answers the pod GET, upgrades `exec` and `portforward`, and answers anything else
//! with a 404 Status, logging it. Every wait has a timeout; kubectl is killed when a test ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use skiff_spdy::{SpdyStream, StreamWriter};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::timeout;

/// Longest any single step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"default","uid":"00000000-0000-0000-0000-000000000001","resourceVersion":"1"},"spec":{"containers":[{"name":"c","image":"x"}]},"status":{"phase":"Running"}}"#;
/// Legacy discovery, just enough for kubectl to map `p` and `pod/p` to pods in v1.
const API_VERSIONS: &str = r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:6443"}]}"#;
const API_GROUPS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const CORE_RESOURCES: &str = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"],"categories":["all"]},{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;
const SUCCESS: &str = r#"{"metadata":{},"status":"Success"}"#;

/// How the stub's exec ends.
#[derive(Clone, Copy)]
enum Exit {
    Success,
    Code(u32),
}

/// What the stub saw, for assertions and for the record.
#[derive(Default)]
struct Seen {
    /// `METHOD path?query` of every request.
    requests: Vec<String>,
    /// Requests the stub had no answer for.
    unexpected: Vec<String>,
    /// `streamtype` of each exec stream, in the order kubectl opened them.
    exec_streams: Vec<String>,
    /// `(requestid, streamtype, port)` of each port-forward stream.
    forward_streams: Vec<(String, String, String)>,
}

struct Stub {
    seen: Arc<Mutex<Seen>>,
    dir: tempfile::TempDir,
}

impl Stub {
    async fn start(exit: Exit) -> Stub {
        // `RUST_LOG=skiff_spdy=trace` shows every frame kubectl sends.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accept_seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let seen = accept_seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, seen.clone(), exit));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        eprintln!("stub connection: {e}");
                    }
                });
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: stub\n  user: {{}}\ncontexts:\n- name: stub\n  context:\n    cluster: stub\n\
             \x20   user: stub\n    namespace: default\ncurrent-context: stub\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("write kubeconfig");
        Stub { seen, dir }
    }

    /// kubectl 1.27 with this stub's kubeconfig and a private HOME (its discovery cache).
    fn kubectl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_127());
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        cmd
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("seen lock")
    }
}

/// `$(dirname $(readlink -f $(which kubectl)))/kubectl.1.27`.
fn kubectl_127() -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    let kubectl = std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl must be on PATH (the machine image ships kubectl 1.27–1.33)");
    let real = std::fs::canonicalize(&kubectl).expect("resolve kubectl");
    let bin = real.parent().unwrap_or(Path::new("/")).join("kubectl.1.27");
    assert!(bin.is_file(), "{} is missing", bin.display());
    bin
}

fn json(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid response")
}

fn switching(protocol: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

async fn handle(req: Request<Body>, seen: Arc<Mutex<Seen>>, exit: Exit) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let line = format!("{} {target}", req.method());
    seen.lock().expect("seen lock").requests.push(line.clone());
    let spdy = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"SPDY/3.1"));
    let offered: Vec<String> = req
        .headers()
        .get_all("X-Stream-Protocol-Version")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();

    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/api") => json(StatusCode::OK, API_VERSIONS),
        (&Method::GET, "/apis") => json(StatusCode::OK, API_GROUPS),
        (&Method::GET, "/api/v1") => json(StatusCode::OK, CORE_RESOURCES),
        (&Method::GET, "/api/v1/namespaces/default/pods/p") => json(StatusCode::OK, POD),
        (&Method::POST, "/api/v1/namespaces/default/pods/p/exec")
            if spdy && offered.iter().any(|p| p == "v4.channel.k8s.io") =>
        {
            let upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(upgraded) => exec(TokioIo::new(upgraded), &query, exit, seen).await,
                    Err(e) => eprintln!("exec upgrade failed: {e}"),
                }
            });
            switching("v4.channel.k8s.io")
        }
        (&Method::POST, "/api/v1/namespaces/default/pods/p/portforward")
            if spdy && offered.iter().any(|p| p == "portforward.k8s.io") =>
        {
            let upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(upgraded) => port_forward(TokioIo::new(upgraded), seen).await,
                    Err(e) => eprintln!("port-forward upgrade failed: {e}"),
                }
            });
            switching("portforward.k8s.io")
        }
        _ => {
            eprintln!("stub: unexpected request {line} (offered {offered:?})");
            seen.lock().expect("seen lock").unexpected.push(line);
            json(
                StatusCode::NOT_FOUND,
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not found","reason":"NotFound","code":404}"#,
            )
        }
    };
    Ok(response)
}

/// The stream types kubectl opens for an exec query, error first.
fn wanted_streams(query: &str) -> Vec<&'static str> {
    let on = |name: &str| query.split('&').any(|kv| kv == format!("{name}=true"));
    let mut wanted = vec!["error"];
    for name in ["stdin", "stdout", "stderr"] {
        if on(name) {
            wanted.push(name);
        }
    }
    if on("tty") {
        wanted.push("resize");
    }
    wanted
}

/// A `cat`: stdin is copied to stdout; at stdin's EOF the exit status goes on the error stream
/// and every stream is finished.
async fn exec<IO>(io: IO, query: &str, exit: Exit, seen: Arc<Mutex<Seen>>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut incoming = skiff_spdy::serve(io);
    let wanted = wanted_streams(query);
    let mut streams: HashMap<String, SpdyStream> = HashMap::new();
    while streams.len() < wanted.len() {
        let Ok(Some(stream)) = timeout(WAIT, incoming.next()).await else {
            eprintln!("exec: kubectl opened only {:?}", streams.keys());
            return;
        };
        let kind = stream.header("streamtype").unwrap_or_default().to_owned();
        seen.lock().expect("seen lock").exec_streams.push(kind.clone());
        streams.insert(kind, stream);
    }
    let mut writers: Vec<(String, StreamWriter)> = Vec::new();
    let mut stdin = None;
    for (kind, stream) in streams {
        let (reader, writer) = stream.split();
        if kind == "stdin" {
            stdin = Some(reader);
        }
        // Readers of the other streams are dropped: kubectl sends nothing on them.
        writers.push((kind, writer));
    }
    let mut writer_of = |kind: &str| {
        writers
            .iter()
            .position(|(k, _)| k == kind)
            .map(|i| writers.swap_remove(i).1)
    };
    let mut error = writer_of("error").expect("error stream");
    let mut stdout = writer_of("stdout");
    if let (Some(mut stdin), Some(stdout)) = (stdin, stdout.as_mut()) {
        let copied = timeout(WAIT, tokio::io::copy(&mut stdin, stdout)).await;
        eprintln!("exec: copied stdin to stdout: {copied:?}");
    }
    for (_, mut other) in writers.into_iter().chain(stdout.map(|w| (String::new(), w))) {
        let _ = other.shutdown().await;
    }
    let status = match exit {
        Exit::Success => SUCCESS.to_owned(),
        Exit::Code(code) => format!(
            r#"{{"metadata":{{}},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [cat], exit code {code}","reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#
        ),
    };
    error.write_all(status.as_bytes()).await.expect("write status");
    error.shutdown().await.expect("finish error stream");
    drop(error);
    // kubectl closes the connection (GOAWAY, then TCP close) once it has the status.
    while let Ok(Some(_)) = timeout(WAIT, incoming.next()).await {}
}

/// Pairs each `requestid`'s error and data streams and echoes the data upper-cased.
async fn port_forward<IO>(io: IO, seen: Arc<Mutex<Seen>>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut incoming = skiff_spdy::serve(io);
    let mut pending: HashMap<String, (Option<SpdyStream>, Option<SpdyStream>)> = HashMap::new();
    while let Some(stream) = incoming.next().await {
        let request = stream.header("requestid").unwrap_or_default().to_owned();
        let kind = stream.header("streamtype").unwrap_or_default().to_owned();
        let port = stream.header("port").unwrap_or_default().to_owned();
        seen.lock()
            .expect("seen lock")
            .forward_streams
            .push((request.clone(), kind.clone(), port));
        let pair = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => pair.0 = Some(stream),
            "data" => pair.1 = Some(stream),
            other => eprintln!("port-forward: unexpected stream type {other:?}"),
        }
        if let (Some(_), Some(_)) = pair {
            let Some((Some(error), Some(data))) = pending.remove(&request) else {
                continue;
            };
            tokio::spawn(echo_upper(error, data));
        }
    }
}

async fn echo_upper(error: SpdyStream, data: SpdyStream) {
    let (_, mut error) = error.split();
    let (mut reader, mut writer) = data.split();
    let mut buf = vec![0u8; 4096];
    loop {
        match timeout(WAIT, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf[..n].make_ascii_uppercase();
                if writer.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer.shutdown().await;
    let _ = error.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_cat_with_stdin() {
    let stub = Stub::start(Exit::Success).await;
    let mut child = stub
        .kubectl(&["exec", "-i", "p", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").await.expect("write stdin");
    drop(stdin);
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .expect("kubectl exec finishes")
        .expect("kubectl output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("kubectl stderr: {stderr}");
    let seen = stub.seen();
    eprintln!("requests: {:#?}", seen.requests);
    assert!(out.status.success(), "kubectl failed: {:?} {stderr}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(seen.exec_streams, ["error", "stdin", "stdout", "stderr"]);
    assert!(
        seen.requests
            .iter()
            .any(|r| r.starts_with("POST /api/v1/namespaces/default/pods/p/exec?")),
        "{:?}",
        seen.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_code_propagates() {
    let stub = Stub::start(Exit::Code(3)).await;
    let out = timeout(
        WAIT,
        stub.kubectl(&["exec", "-i", "p", "--", "cat"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("kubectl exec finishes")
    .expect("kubectl output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("kubectl stderr: {stderr}");
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("command terminated with exit code 3"), "{stderr}");
}

/// Sends `text` through the forwarded port and returns what comes back before EOF.
async fn round_trip(port: u16, text: &[u8]) -> Vec<u8> {
    let mut tcp = timeout(WAIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect in time")
        .expect("connect");
    tcp.write_all(text).await.expect("send");
    let mut back = vec![0u8; text.len()];
    timeout(WAIT, tcp.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    // Closing our side ends the data stream; the stub then finishes its side.
    tcp.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .expect("read to EOF");
    back.extend(rest);
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_pairs_streams_by_request_id() {
    let stub = Stub::start(Exit::Success).await;
    // `:80` lets kubectl pick a free local port; it prints the one it chose.
    let mut child = stub
        .kubectl(&["port-forward", "--address", "127.0.0.1", "pod/p", ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let local: u16 = timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("kubectl stdout") {
            eprintln!("kubectl: {line}");
            // "Forwarding from 127.0.0.1:PORT -> 80"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split_whitespace().next().unwrap_or_default();
                return port.parse().expect("a port number");
            }
        }
        panic!("kubectl exited before forwarding");
    })
    .await
    .expect("kubectl prints `Forwarding from` in time");
    // Keep draining kubectl's output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    assert_eq!(round_trip(local, b"hello port 80\n").await, b"HELLO PORT 80\n");
    assert_eq!(round_trip(local, b"second connection").await, b"SECOND CONNECTION");

    child.start_kill().expect("kill kubectl");
    let _ = timeout(WAIT, child.wait()).await.expect("kubectl exits when killed");
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = timeout(WAIT, err.read_to_string(&mut stderr)).await;
    }
    eprintln!("kubectl stderr: {stderr}");

    let seen = stub.seen();
    eprintln!("requests: {:#?}", seen.requests);
    let mut streams = seen.forward_streams.clone();
    streams.sort();
    let expect = |id: &str, kind: &str| (id.to_owned(), kind.to_owned(), "80".to_owned());
    assert_eq!(
        streams,
        [
            expect("0", "data"),
            expect("0", "error"),
            expect("1", "data"),
            expect("1", "error"),
        ]
    );
}
