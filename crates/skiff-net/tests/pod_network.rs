//! Pod networking against the real kernel. Needs root: each test runs itself again inside a
//! fresh network and mount namespace made with `unshare` — that namespace plays the node, so
//! the bridge, veths, pod namespaces and their bind mounts never touch the machine's own
//! network or mounts, and vanish with the process.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use skiff_net::{host_veth_name, NetError, Netns, NodeNetwork, NodeNetworkConfig};

const INNER: &str = "SKIFF_NET_TEST_INNER";

/// True when this is the copy inside the namespaces; otherwise run that copy and check it.
fn inside_namespaces(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "{test} needs root: it creates network namespaces, a bridge and veth pairs"
    );
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private"])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .status()
        .expect("run unshare (util-linux)");
    assert!(status.success(), "{test} failed inside its namespaces: {status}");
    false
}

fn config(dir: &Path, cidr: &str) -> NodeNetworkConfig {
    let mut cfg = NodeNetworkConfig::new(cidr.parse().expect("cidr"), &dir.join("data"), &dir.join("run"));
    cfg.bridge = "skiff0".into();
    cfg
}

/// Interfaces the namespace has, from the kernel's own table.
fn interfaces(ns: &Netns) -> Vec<String> {
    ns.run(|| {
        std::fs::read_to_string("/proc/thread-self/net/dev")
            .expect("net/dev")
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
            .collect()
    })
    .expect("enter namespace")
}

/// An echo server on port 8080 inside `ns`, serving `n` connections.
fn echo_server(ns: &Netns, n: usize) {
    let listener = ns
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .expect("enter namespace")
        .expect("listen in the pod");
    std::thread::spawn(move || {
        for conn in listener.incoming().take(n) {
            let mut c = conn.expect("accept");
            let mut buf = [0u8; 64];
            let k = c.read(&mut buf).expect("read");
            c.write_all(&buf[..k]).expect("write");
        }
    });
}

fn call(addr: SocketAddr, msg: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(msg.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_the_bridge_reach_each_other_and_the_node() {
    if !inside_namespaces("pods_on_the_bridge_reach_each_other_and_the_node") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeNetwork::start(config(dir.path(), "10.42.3.0/24"))
        .await
        .expect("node network");
    let a = node.setup_pod("uid-a").await.expect("pod a");
    let b = node.setup_pod("uid-b").await.expect("pod b");
    let cidr: ipnet::Ipv4Net = "10.42.3.0/24".parse().expect("cidr");
    assert!(cidr.contains(&a.ip) && cidr.contains(&b.ip), "{a:?} {b:?}");
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.gateway, Ipv4Addr::new(10, 42, 3, 1));
    assert!(a.ip != a.gateway && b.ip != b.gateway);

    let ns_a = Netns::open(&a.netns).expect("pod a namespace");
    let ns_b = Netns::open(&b.netns).expect("pod b namespace");
    let mut ifs = interfaces(&ns_a);
    ifs.sort();
    assert_eq!(ifs, ["eth0", "lo"], "a pod sees its loopback and eth0 only");

    echo_server(&ns_a, 3);
    let a_addr = SocketAddr::from((a.ip, 8080));
    // Pod to pod over the bridge.
    let from_b = ns_b
        .run(move || call(a_addr, "from b"))
        .expect("enter b")
        .expect("b reaches a");
    assert_eq!(from_b, "from b");
    // The node to the pod.
    assert_eq!(call(a_addr, "from node").expect("node reaches a"), "from node");
    // The pod's own loopback is up.
    let local = ns_a
        .run(|| call(SocketAddr::from(([127, 0, 0, 1], 8080)), "from lo"))
        .expect("enter a")
        .expect("loopback");
    assert_eq!(local, "from lo");
    // The pod's default route goes through the gateway on the bridge: the node's address on
    // the bridge answers from inside the pod.
    let gw_listener = TcpListener::bind((a.gateway, 9090)).expect("listen on the gateway");
    let gw = SocketAddr::from((a.gateway, 9090));
    let connected = ns_b
        .run(move || TcpStream::connect_timeout(&gw, Duration::from_secs(3)).is_ok())
        .expect("enter b");
    assert!(connected, "pod b reaches the node through its gateway");
    drop(gw_listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_readopts_and_teardown_leaves_nothing() {
    if !inside_namespaces("a_restarted_agent_readopts_and_teardown_leaves_nothing") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = NodeNetwork::start(config(dir.path(), "10.42.4.0/24"))
        .await
        .expect("node network");
    let a = first.setup_pod("uid-a").await.expect("pod a");
    drop(first);

    // The agent restarts: the same pod keeps its namespace, address and connectivity.
    let node = NodeNetwork::start(config(dir.path(), "10.42.4.0/24"))
        .await
        .expect("node network again");
    assert_eq!(node.pods().expect("pods"), ["uid-a"]);
    let again = node.setup_pod("uid-a").await.expect("pod a again");
    assert_eq!(again, a);
    let ns_a = Netns::open(&a.netns).expect("namespace survives");
    echo_server(&ns_a, 1);
    assert_eq!(
        call(SocketAddr::from((a.ip, 8080)), "still here").expect("reach a"),
        "still here"
    );

    node.teardown_pod("uid-a").await.expect("teardown");
    assert!(!a.netns.exists(), "namespace file removed");
    assert!(Netns::open(&a.netns).is_err());
    let host_links = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
    assert!(
        !host_links.contains(&host_veth_name("uid-a")),
        "host veth removed:\n{host_links}"
    );
    assert_eq!(node.ipam().held_by("uid-a").expect("ipam"), None);
    node.teardown_pod("uid-a").await.expect("teardown twice is fine");
    // A new pod does not get the released address at once.
    let c = node.setup_pod("uid-c").await.expect("pod c");
    assert_ne!(c.ip, a.ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cidr_refuses_the_pod_and_leaves_nothing_behind() {
    if !inside_namespaces("a_full_cidr_refuses_the_pod_and_leaves_nothing_behind") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A /30: a gateway and one pod.
    let node = NodeNetwork::start(config(dir.path(), "10.42.5.0/30"))
        .await
        .expect("node network");
    node.setup_pod("uid-a").await.expect("the one pod that fits");
    match node.setup_pod("uid-b").await {
        Err(NetError::Exhausted(c)) => assert_eq!(c.to_string(), "10.42.5.0/30"),
        other => panic!("expected an exhausted CIDR, got {other:?}"),
    }
    let netns_dir = dir.path().join("run").join("netns");
    let left: Vec<_> = std::fs::read_dir(&netns_dir)
        .expect("netns dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["uid-a"], "no namespace for the refused pod");
    let host_links = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
    assert!(!host_links.contains(&host_veth_name("uid-b")));
}

/// Runs `ip ARGS` in `ns` (a child forked from a thread inside `ns` starts there).
fn ip_in(ns: &Netns, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let ok = ns
        .run(move || Command::new("ip").args(&args).status().is_ok_and(|s| s.success()))
        .expect("enter namespace");
    assert!(ok, "ip failed in {}", ns.path().display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_masqueraded_only_to_configured_destinations() {
    if !inside_namespaces("egress_is_masqueraded_only_to_configured_destinations") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // "Outside": another host on a link to the node (192.0.2.0/24), with no route back to
    // the pod network.
    let outside = Netns::create(dir.path(), "outside").expect("outside namespace");
    let me = std::process::id().to_string();
    ip_in(
        &outside,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "out0", "netns", &me,
        ],
    );
    ip_in(&outside, &["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    ip_in(&outside, &["addr", "add", "192.0.2.200/24", "dev", "eth0"]);
    ip_in(&outside, &["link", "set", "eth0", "up"]);
    let status = Command::new("ip")
        .args(["addr", "add", "192.0.2.1/24", "dev", "out0"])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let status = Command::new("ip").args(["link", "set", "out0", "up"]).status();
    assert!(status.is_ok_and(|s| s.success()));

    let mut cfg = config(dir.path(), "10.42.7.0/24");
    cfg.egress = vec!["192.0.2.0/25".parse().expect("cidr")];
    let node = NodeNetwork::start(cfg).await.expect("node network");
    let pod = node.setup_pod("uid-egress").await.expect("pod");
    let pod_ns = Netns::open(&pod.netns).expect("pod namespace");
    // A server outside that answers with the address it saw the connection come from.
    let listener = outside
        .run(|| TcpListener::bind("0.0.0.0:9000"))
        .expect("enter outside")
        .expect("listen outside");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let peer = c.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
    // To a configured destination: masqueraded behind the node's address on that link.
    let seen = pod_ns
        .run(|| call(SocketAddr::from(([192, 0, 2, 2], 9000)), ""))
        .expect("enter pod")
        .expect("the pod reaches a configured destination");
    assert_eq!(seen, "192.0.2.1", "the pod's traffic leaves behind the node's address");
    // Elsewhere (192.0.2.200 is outside 192.0.2.0/25): not translated, so the answer has no
    // way back to the pod network.
    let other = pod_ns
        .run(|| call(SocketAddr::from(([192, 0, 2, 200], 9000)), ""))
        .expect("enter pod");
    assert!(
        other.is_err(),
        "unconfigured destinations are not masqueraded: {other:?}"
    );
    // Restarting the node network keeps the table and its configuration.
    drop(node);
    let mut cfg = config(dir.path(), "10.42.7.0/24");
    cfg.egress = vec!["192.0.2.0/25".parse().expect("cidr")];
    let _node = NodeNetwork::start(cfg).await.expect("restarted node network");
    let again = pod_ns
        .run(|| call(SocketAddr::from(([192, 0, 2, 2], 9000)), ""))
        .expect("enter pod")
        .expect("still reaches it after a restart");
    assert_eq!(again, "192.0.2.1");
}

/// A server on port 8080 inside `ns` that answers every connection with `name`.
fn name_server(ns: &Netns, name: &'static str) {
    let listener = ns
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .expect("enter namespace")
        .expect("listen in the pod");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(name.as_bytes());
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_vips_balance_over_ready_endpoints() {
    use skiff_net::nat::Protocol;
    use skiff_net::services::{ServicePort, ServiceTable};
    if !inside_namespaces("service_vips_balance_over_ready_endpoints") {
        return;
    }
    let lo = Command::new("ip").args(["link", "set", "lo", "up"]).status();
    assert!(lo.is_ok_and(|s| s.success()));
    let dir = tempfile::tempdir().expect("tempdir");
    let cidr: ipnet::Ipv4Net = "10.42.9.0/24".parse().expect("cidr");
    let node = NodeNetwork::start(config(dir.path(), "10.42.9.0/24"))
        .await
        .expect("node network");
    let a = node.setup_pod("uid-a").await.expect("pod a");
    let b = node.setup_pod("uid-b").await.expect("pod b");
    let (ns_a, ns_b) = (Netns::open(&a.netns).expect("a"), Netns::open(&b.netns).expect("b"));
    name_server(&ns_a, "a");
    name_server(&ns_b, "b");
    let vip = Ipv4Addr::new(10, 43, 0, 10);
    let web = |endpoints: Vec<(Ipv4Addr, u16)>| ServicePort {
        key: "default/web:http/TCP".into(),
        cluster_ip: Some(vip),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: Some(30080),
        endpoints,
        affinity_seconds: None,
        external_local: None,
    };
    node.route_services("10.43.0.0/16".parse().expect("cidr"))
        .await
        .expect("route");
    let mut table = ServiceTable::ensure(cidr).expect("service table");
    table.apply(&[web(vec![(a.ip, 8080), (b.ip, 8080)])]).expect("apply");
    let seen = |from: Option<&Netns>, addr: SocketAddr| -> BTreeSet<String> {
        (0..40)
            .map(|_| match from {
                Some(ns) => ns.run(move || call(addr, "")).expect("enter"),
                None => call(addr, ""),
            })
            .map(|r| r.expect("the service answers"))
            .collect()
    };
    let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    // From a pod (also reaching itself through the VIP), from the node, and the node port
    // on the node's loopback: every connection answered, spread over both endpoints.
    assert_eq!(seen(Some(&ns_a), SocketAddr::from((vip, 80))), both);
    assert_eq!(seen(None, SocketAddr::from((vip, 80))), both);
    assert_eq!(seen(None, SocketAddr::from(([127, 0, 0, 1], 30080))), both);
    // sessionAffinity ClientIP: every connection of a client goes to the same endpoint.
    table
        .apply(&[ServicePort {
            affinity_seconds: Some(60),
            ..web(vec![(a.ip, 8080), (b.ip, 8080)])
        }])
        .expect("apply");
    assert_eq!(
        seen(Some(&ns_a), SocketAddr::from((vip, 80))).len(),
        1,
        "one endpoint per client"
    );
    assert_eq!(
        seen(None, SocketAddr::from((vip, 80))).len(),
        1,
        "one endpoint per client"
    );
    table.apply(&[web(vec![(a.ip, 8080), (b.ip, 8080)])]).expect("apply");
    assert_eq!(
        seen(Some(&ns_a), SocketAddr::from((vip, 80))),
        both,
        "affinity off again"
    );
    // One endpoint left ready: only it answers.
    table.apply(&[web(vec![(b.ip, 8080)])]).expect("apply");
    assert_eq!(seen(Some(&ns_a), SocketAddr::from((vip, 80))), ["b".to_string()].into());
    // None ready: refused at once, not left to time out.
    table.apply(&[web(vec![])]).expect("apply");
    let started = std::time::Instant::now();
    let err = call(SocketAddr::from((vip, 80)), "").expect_err("no endpoints");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A restart with the service gone: its chains and elements are cleaned up, others stay.
    table.apply(&[web(vec![(a.ip, 8080)])]).expect("apply");
    drop(table);
    let other = ServicePort {
        key: "default/other:80/TCP".into(),
        cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 11)),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: None,
        endpoints: vec![(b.ip, 8080)],
        affinity_seconds: None,
        external_local: None,
    };
    let mut table = ServiceTable::ensure(cidr).expect("service table again");
    table.apply(std::slice::from_ref(&other)).expect("reconcile");
    assert_eq!(
        seen(None, SocketAddr::from(([10, 43, 0, 11], 80))),
        ["b".to_string()].into()
    );
    let listed = Command::new("nft")
        .args(["list", "table", "ip", "skiff-services"])
        .output()
        .expect("nft");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.matches("chain svc-").count(), 1, "{listed}");
    assert_eq!(listed.matches("chain ep-").count(), 1, "{listed}");
    assert!(
        call(SocketAddr::from((vip, 80)), "").is_err(),
        "the removed service no longer answers"
    );
}

/// The main table's IPv4 routes, as `ip route` prints them.
fn ip_routes() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "main"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_to_other_nodes_pods_are_reconciled_and_keep_pod_addresses() {
    use skiff_net::routes::{self, PeerRoute, PeerRoutes};
    if !inside_namespaces("routes_to_other_nodes_pods_are_reconciled_and_keep_pod_addresses") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Another node on the LAN (192.0.2.2), whose pod 10.42.8.5 answers with the address it
    // saw the connection come from; it routes this node's pods back via 192.0.2.1.
    let other = Netns::create(dir.path(), "other-node").expect("namespace");
    let me = std::process::id().to_string();
    ip_in(
        &other,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", &me,
        ],
    );
    ip_in(&other, &["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    ip_in(&other, &["link", "set", "eth0", "up"]);
    ip_in(&other, &["link", "set", "lo", "up"]);
    ip_in(&other, &["addr", "add", "10.42.8.5/32", "dev", "lo"]);
    ip_in(&other, &["route", "add", "10.42.7.0/24", "via", "192.0.2.1"]);
    for args in [
        &["addr", "add", "192.0.2.1/24", "dev", "lan0"][..],
        &["link", "set", "lan0", "up"],
        // Someone else's routes: never touched.
        &["route", "add", "198.51.100.0/24", "via", "192.0.2.9"],
        &["route", "add", "10.42.10.0/24", "via", "192.0.2.5"],
    ] {
        let status = Command::new("ip").args(args).status();
        assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
    }
    let listener = other
        .run(|| TcpListener::bind("0.0.0.0:9000"))
        .expect("enter the other node")
        .expect("listen");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let peer = c.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });

    // This node masquerades its pods' traffic to anywhere (`--egress-cidr 0.0.0.0/0`).
    let mut cfg = config(dir.path(), "10.42.7.0/24");
    cfg.egress = vec!["0.0.0.0/0".parse().expect("cidr")];
    let node = NodeNetwork::start(cfg).await.expect("node network");
    let pod = node.setup_pod("uid-routed").await.expect("pod");
    let pod_ns = Netns::open(&pod.netns).expect("pod namespace");

    let table = PeerRoutes::connect().await.expect("netlink");
    let connected = table.connected().await.expect("addresses");
    assert!(
        connected.contains(&"192.0.2.0/24".parse().expect("net")),
        "{connected:?}"
    );
    assert!(!connected.iter().any(|n| n.network().is_loopback()), "{connected:?}");
    assert!(routes::on_link("192.0.2.2".parse().expect("ip"), &connected));
    assert!(!routes::on_link("203.0.113.2".parse().expect("ip"), &connected));

    let r = |cidr: &str, via: &str| PeerRoute {
        cidr: cidr.parse().expect("cidr"),
        via: via.parse().expect("ip"),
        dev: None,
    };
    let report = table
        .reconcile(&[
            r("10.42.8.0/24", "192.0.2.2"),
            r("10.42.9.0/24", "192.0.2.3"),
            r("10.42.10.0/24", "192.0.2.6"),
        ])
        .await
        .expect("reconcile");
    assert_eq!(
        report.added,
        vec![r("10.42.8.0/24", "192.0.2.2"), r("10.42.9.0/24", "192.0.2.3")]
    );
    assert_eq!(
        report.failed.len(),
        1,
        "someone else's route to 10.42.10.0/24 stays: {report:?}"
    );
    assert_eq!(
        table.installed().await.expect("routes"),
        vec![r("10.42.8.0/24", "192.0.2.2"), r("10.42.9.0/24", "192.0.2.3")]
    );
    let shown = ip_routes();
    assert!(
        shown.contains("10.42.8.0/24 via 192.0.2.2 dev lan0 proto 115"),
        "{shown}"
    );
    assert!(shown.contains("10.42.10.0/24 via 192.0.2.5 dev lan0"), "{shown}");

    // A pod reaches the other node's pod and keeps its address, though everything else it
    // sends out is masqueraded.
    tokio::task::spawn_blocking(|| routes::exempt_from_masquerade(&["10.42.8.0/24".parse().expect("cidr")]))
        .await
        .expect("thread")
        .expect("exempt");
    let pod_ip = pod.ip;
    let seen = pod_ns
        .run(|| call(SocketAddr::from(([10, 42, 8, 5], 9000)), ""))
        .expect("enter pod")
        .expect("the pod reaches a pod on the other node");
    assert_eq!(seen, pod_ip.to_string(), "pod addresses are kept between nodes");
    let seen = pod_ns
        .run(|| call(SocketAddr::from(([192, 0, 2, 2], 9000)), ""))
        .expect("enter pod")
        .expect("the pod reaches the other node");
    assert_eq!(seen, "192.0.2.1", "other destinations are masqueraded");

    // After a restart: a node that went is no longer routed, one that moved is routed anew;
    // other routes stay.
    drop(table);
    let table = PeerRoutes::connect().await.expect("netlink");
    let report = table
        .reconcile(&[r("10.42.9.0/24", "192.0.2.4")])
        .await
        .expect("reconcile");
    assert_eq!(report.removed, vec![r("10.42.8.0/24", "192.0.2.2")]);
    assert_eq!(report.added, vec![r("10.42.9.0/24", "192.0.2.4")]);
    assert_eq!(
        table.installed().await.expect("routes"),
        vec![r("10.42.9.0/24", "192.0.2.4")]
    );
    let report = table.reconcile(&[]).await.expect("reconcile");
    assert_eq!(report.removed, vec![r("10.42.9.0/24", "192.0.2.4")]);
    let shown = ip_routes();
    assert!(!shown.contains("proto 115"), "{shown}");
    assert!(shown.contains("198.51.100.0/24 via 192.0.2.9"), "{shown}");
    assert!(shown.contains("10.42.10.0/24 via 192.0.2.5"), "{shown}");
    assert!(
        pod_ns
            .run(|| call(SocketAddr::from(([10, 42, 8, 5], 9000)), ""))
            .expect("enter pod")
            .is_err(),
        "no route to a node that left"
    );
}

/// Answers each connection with the address it came from.
fn peer_server(ns: &Netns, port: u16) {
    let listener = ns
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .expect("enter namespace")
        .expect("listen in the pod");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let peer = c.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().expect(args[0]);
    assert!(st.success(), "{args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_with_local_traffic_policy_keep_the_client_address() {
    use skiff_net::nat::Protocol;
    use skiff_net::services::{ServicePort, ServiceTable};
    if !inside_namespaces("node_ports_with_local_traffic_policy_keep_the_client_address") {
        return;
    }
    sh(&["ip", "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cidr: ipnet::Ipv4Net = "10.42.11.0/24".parse().expect("cidr");
    let node = NodeNetwork::start(config(dir.path(), "10.42.11.0/24"))
        .await
        .expect("node network");
    let a = node.setup_pod("uid-a").await.expect("pod a");
    let b = node.setup_pod("uid-b").await.expect("pod b");
    let (ns_a, ns_b) = (Netns::open(&a.netns).expect("a"), Netns::open(&b.netns).expect("b"));
    peer_server(&ns_a, 8081);
    peer_server(&ns_b, 8081);
    // A client machine on another network, joined to the node by a veth.
    let client = Netns::create(dir.path(), "client").expect("client netns");
    let in_client = |args: &[&str]| {
        let mut full = vec!["nsenter".to_string(), format!("--net={}", client.path().display())];
        full.extend(args.iter().map(|a| a.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        sh(&full);
    };
    in_client(&["ip", "link", "add", "cl0", "type", "veth", "peer", "name", "eth0"]);
    in_client(&["ip", "link", "set", "cl0", "netns", &std::process::id().to_string()]);
    in_client(&["ip", "addr", "add", "192.168.200.2/24", "dev", "eth0"]);
    in_client(&["ip", "link", "set", "eth0", "up"]);
    in_client(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "addr", "add", "192.168.200.1/24", "dev", "cl0"]);
    sh(&["ip", "link", "set", "cl0", "up"]);

    let web = |external_local: Option<Vec<(Ipv4Addr, u16)>>| ServicePort {
        key: "default/web:http/TCP".into(),
        cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 30)),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: Some(30090),
        endpoints: vec![(a.ip, 8081), (b.ip, 8081)],
        affinity_seconds: None,
        external_local,
    };
    let node_port = SocketAddr::from(([192, 168, 200, 1], 30090));
    let c = client.clone();
    let from_client = move || -> BTreeSet<String> {
        (0..30)
            .map(|_| c.run(move || call(node_port, "")).expect("enter"))
            .map(|r| r.expect("the node port answers"))
            .collect()
    };
    let mut table = ServiceTable::ensure(cidr).expect("service table");
    // Cluster: either pod answers, and sees the node (masqueraded), not the client.
    table.apply(&[web(None)]).expect("apply");
    let seen = from_client();
    assert!(!seen.contains("192.168.200.2"), "masqueraded: {seen:?}");
    // Local: only this node's endpoints (here: b) and they see the client's own address.
    table.apply(&[web(Some(vec![(b.ip, 8081)]))]).expect("apply");
    let seen = from_client();
    assert_eq!(seen, ["192.168.200.2".to_string()].into(), "the client's address kept");
    // The node itself still reaches the node port (treated as Cluster, as kube-proxy does).
    assert!(call(SocketAddr::from(([127, 0, 0, 1], 30090)), "").is_ok());
    // Local without endpoints on this node: dropped (a timeout, not a refusal).
    table.apply(&[web(Some(vec![]))]).expect("apply");
    let err = client
        .run(move || call(node_port, ""))
        .expect("enter")
        .expect_err("no local endpoint");
    assert_ne!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_their_address_through_a_cluster_ip_and_host_port_hairpins_are_masqueraded() {
    use skiff_net::nat::{HostPort, Protocol};
    use skiff_net::services::{ServicePort, ServiceTable};
    if !inside_namespaces("pods_keep_their_address_through_a_cluster_ip_and_host_port_hairpins_are_masqueraded") {
        return;
    }
    sh(&["ip", "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cidr: ipnet::Ipv4Net = "10.42.12.0/24".parse().expect("cidr");
    let node = NodeNetwork::start(config(dir.path(), "10.42.12.0/24"))
        .await
        .expect("node network");
    let a = node.setup_pod("uid-a").await.expect("pod a");
    let b = node.setup_pod("uid-b").await.expect("pod b");
    let (ns_a, ns_b) = (Netns::open(&a.netns).expect("a"), Netns::open(&b.netns).expect("b"));
    peer_server(&ns_b, 8081);
    node.route_services("10.43.0.0/16".parse().expect("cidr"))
        .await
        .expect("route");
    let mut table = ServiceTable::ensure(cidr).expect("service table");
    table
        .apply(&[ServicePort {
            key: "default/peer:http/TCP".into(),
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 40)),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            endpoints: vec![(b.ip, 8081)],
            affinity_seconds: None,
            external_local: None,
        }])
        .expect("apply");
    node.publish_host_ports(vec![HostPort {
        protocol: Protocol::Tcp,
        host_port: 18081,
        pod_ip: b.ip,
        container_port: 8081,
    }])
    .await
    .expect("host port");
    let from_a = |to: SocketAddr| ns_a.run(move || call(to, "")).expect("enter pod").expect("answers");
    // Through the ClusterIP, the endpoint sees the client pod (Kubernetes' e2e "should
    // preserve source pod IP for traffic thru service cluster IP"): with br_netfilter the
    // answer is un-NATed on the bridge; without it the service rules have to masquerade.
    let bridged =
        std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").is_ok_and(|v| v.trim() == "1");
    let expected = if bridged { a.ip } else { node.gateway() };
    assert_eq!(from_a(SocketAddr::from(([10, 43, 0, 40], 80))), expected.to_string());
    // A host port reached from a pod on the same bridge: masqueraded (hairpin), as before.
    assert_eq!(
        from_a(SocketAddr::from((node.gateway(), 18081))),
        node.gateway().to_string()
    );
}
