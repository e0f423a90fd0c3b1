//! The DNS server over real UDP and TCP sockets on loopback: cluster answers from a zone, other
//! names relayed to an upstream resolver the test runs (never the machine's).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;
use skiff_dns::{exchange, Shared, Zone};

/// A resolver standing in for the node's: `example.com` A 192.0.2.1, everything else NXDOMAIN.
async fn fake_upstream() -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_available = true;
            for query in &q.queries {
                r.add_query(query.clone());
                if query.name().to_ascii().eq_ignore_ascii_case("example.com.") && query.query_type() == RecordType::A {
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                    ));
                } else {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
            }
            let _ = sock.send_to(&r.to_vec().expect("encode"), from).await;
        }
    });
    addr
}

fn zone() -> Zone {
    let services: Vec<k8s_openapi::api::core::v1::Service> = serde_json::from_value(json!([
        {"metadata": {"name": "api", "namespace": "shop"},
         "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
        {"metadata": {"name": "nginx", "namespace": "default"},
         "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}},
        {"metadata": {"name": "ext", "namespace": "default"},
         "spec": {"type": "ExternalName", "externalName": "example.com"}}
    ]))
    .expect("services");
    let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = serde_json::from_value(json!([
        {"metadata": {"name": "nginx-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "nginx"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.42.0.5"], "hostname": "web-0"}, {"addresses": ["10.42.0.6"], "hostname": "web-1"}],
         "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}
    ]))
    .expect("slices");
    Zone::build("cluster.local", &services, &slices)
}

struct Dns {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

async fn start() -> Dns {
    let upstream = fake_upstream().await;
    // A port free for both UDP and TCP.
    let port = loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        let p = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let shared = Shared::new("cluster.local");
    let s = shared.clone();
    tokio::spawn(async move { skiff_dns::serve(s, vec![upstream], &[addr]).await });
    // Listening once a query gets any answer.
    for _ in 0..100 {
        if exchange(&[addr], &query("probe.", RecordType::A), false)
            .await
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Dns { addr, shared }
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    m.to_vec().expect("encode")
}

async fn ask(dns: &Dns, name: &str, t: RecordType, tcp: bool) -> Message {
    let answer = exchange(&[dns.addr], &query(name, t), tcp).await.expect("an answer");
    Message::from_vec(&answer).expect("decode")
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn cluster_names_are_answered_and_others_forwarded() {
    let dns = start().await;

    // Before the cache has synced, cluster names fail (SERVFAIL: retried), never NXDOMAIN.
    let early = ask(&dns, "api.shop.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(early.metadata.response_code, ResponseCode::ServFail);

    dns.shared.publish(zone());
    let a = ask(&dns, "api.shop.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative, "cluster answers are authoritative");
    assert_eq!(ips(&a), vec![IpAddr::from([10, 43, 0, 20])]);
    assert_eq!(a.answers[0].ttl, 5);
    // Names are case-insensitive; TCP answers the same.
    let tcp = ask(&dns, "API.Shop.svc.cluster.local.", RecordType::A, true).await;
    assert_eq!(ips(&tcp), vec![IpAddr::from([10, 43, 0, 20])]);

    // Headless: every ready pod, and each StatefulSet pod by name.
    let headless = ask(&dns, "nginx.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(
        ips(&headless),
        vec![IpAddr::from([10, 42, 0, 5]), IpAddr::from([10, 42, 0, 6])]
    );
    let web1 = ask(&dns, "web-1.nginx.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(ips(&web1), vec![IpAddr::from([10, 42, 0, 6])]);

    // SRV with the targets' addresses as additionals; PTR back to the pod's name.
    let srv = ask(
        &dns,
        "_web._tcp.nginx.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(srv.answers.len(), 2, "{srv:?}");
    assert_eq!(
        srv.additionals.iter().filter(|r| matches!(r.data, RData::A(_))).count(),
        2
    );
    let ptr = ask(&dns, "6.0.42.10.in-addr.arpa.", RecordType::PTR, false).await;
    assert!(
        matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web-1.nginx.default.svc.cluster.local."),
        "{ptr:?}"
    );

    // A name that does not exist: NXDOMAIN with the zone's SOA (what negative caching needs);
    // an existing name without IPv6: NODATA.
    let nx = ask(&dns, "nope.shop.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.authorities.iter().any(|r| matches!(r.data, RData::SOA(_))), "{nx:?}");
    let aaaa = ask(&dns, "api.shop.svc.cluster.local.", RecordType::AAAA, false).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());

    // Outside names go to the upstream, answers and errors alike.
    let out = ask(&dns, "example.com.", RecordType::A, false).await;
    assert_eq!(ips(&out), vec![IpAddr::from([192, 0, 2, 1])]);
    assert_eq!(out.metadata.id, 4242);
    let out_nx = ask(&dns, "nothing.example.", RecordType::A, false).await;
    assert_eq!(out_nx.metadata.response_code, ResponseCode::NXDomain);

    // ExternalName: the CNAME and the target's address from upstream.
    let ext = ask(&dns, "ext.default.svc.cluster.local.", RecordType::A, false).await;
    assert!(
        matches!(&ext.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.com."),
        "{ext:?}"
    );
    assert_eq!(ips(&ext), vec![IpAddr::from([192, 0, 2, 1])]);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_servfail_not_a_hang() {
    let dns = {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .expect("probe")
            .local_addr()
            .expect("a")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let shared = Shared::new("cluster.local");
        shared.publish(zone());
        // An upstream nobody answers on.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")
            .expect("dead")
            .local_addr()
            .expect("a");
        let s = shared.clone();
        tokio::spawn(async move { skiff_dns::serve(s, vec![dead], &[addr]).await });
        // Ready when it answers a cluster name (a fixed wait was too short on a loaded
        // machine); those never go to the upstream.
        for _ in 0..250 {
            let probe = query("api.shop.svc.cluster.local.", RecordType::A);
            if exchange(&[addr], &probe, false).await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Dns { addr, shared }
    };
    let started = std::time::Instant::now();
    let m = ask(&dns, "example.org.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Cluster names do not depend on the upstream.
    let a = ask(&dns, "api.shop.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(ips(&a), vec![IpAddr::from([10, 43, 0, 20])]);
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_server_keeps_serving() {
    use hickory_server::proto::op::OpCode;
    let dns = start().await;
    dns.shared.publish(zone());
    // An UPDATE (a client trying to change the cluster's records): not implemented.
    let mut update = Message::query();
    update.metadata.id = 7;
    update.metadata.op_code = OpCode::Update;
    update.add_query(Query::query(
        Name::from_ascii("cluster.local.").expect("name"),
        RecordType::SOA,
    ));
    let answer = exchange(&[dns.addr], &update.to_vec().expect("encode"), false)
        .await
        .expect("an answer to an update");
    let answer = Message::from_vec(&answer).expect("decode");
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    assert!(answer.answers.is_empty());
    // Garbage datagrams, over UDP and TCP: no crash, the next query is answered.
    let garbage = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for junk in [&b"\x00"[..], b"not a dns message at all", &[0xff; 300]] {
        garbage.send_to(junk, dns.addr).await.expect("send");
    }
    if let Ok(mut tcp) = tokio::net::TcpStream::connect(dns.addr).await {
        use tokio::io::AsyncWriteExt;
        let _ = tcp.write_all(b"\x00\x05hello").await;
    }
    let a = ask(&dns, "api.shop.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(ips(&a), vec![IpAddr::from([10, 43, 0, 20])]);
    let a = ask(&dns, "api.shop.svc.cluster.local.", RecordType::A, true).await;
    assert_eq!(ips(&a), vec![IpAddr::from([10, 43, 0, 20])]);
}
