//! Answers DNS queries: cluster names from the [`Zone`], everything else relayed to the
//! node's resolvers (the upstreams), as CoreDNS's `kubernetes` and `forward` plugins do.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::zone::{parse_reverse, Lookup, Zone};

/// How long answers may be cached (CoreDNS's `kubernetes` default).
pub const TTL: u32 = 5;
/// How long an upstream has to answer before the next one is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How many CNAMEs are followed inside the cluster before giving up.
const MAX_CHAIN: usize = 8;

/// What the server answers from: the latest zone, and whether the cache has synced once.
#[derive(Default)]
pub struct Shared {
    zone: RwLock<Arc<Zone>>,
    synced: AtomicBool,
}

impl Shared {
    pub fn new(domain: &str) -> Arc<Shared> {
        let zone = Zone::build(domain, [], []);
        Arc::new(Shared {
            zone: RwLock::new(Arc::new(zone)),
            synced: AtomicBool::new(false),
        })
    }

    /// Replaces the zone (the cache has a complete view).
    pub fn publish(&self, zone: Zone) {
        *self.zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
        self.synced.store(true, Ordering::Release);
    }

    pub fn zone(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// The request handler hickory-server's listeners call.
pub struct Handler {
    shared: Arc<Shared>,
    upstreams: Arc<Vec<SocketAddr>>,
}

impl Handler {
    pub fn new(shared: Arc<Shared>, upstreams: Vec<SocketAddr>) -> Handler {
        Handler {
            shared,
            upstreams: Arc::new(upstreams),
        }
    }
}

/// A locally made answer.
#[derive(Debug, Default)]
struct Local {
    rcode: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    /// The zone's SOA in the authority section (negative answers).
    soa: Vec<Record>,
}

enum Resolution {
    Local(Local),
    /// Not the cluster's: relay the query to the upstreams.
    Forward,
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

fn address_record(owner: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), TTL, data)
}

fn soa_record(domain: &str) -> Vec<Record> {
    let (Some(owner), Some(mname), Some(rname)) = (
        fqdn(domain),
        fqdn(&format!("ns.dns.{domain}")),
        fqdn(&format!("hostmaster.{domain}")),
    ) else {
        return Vec::new();
    };
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
    vec![Record::from_rdata(owner, TTL, RData::SOA(soa))]
}

fn wants(qtype: RecordType, ip: &IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _)
    )
}

/// Resolves `name`/`qtype` against the zone. `None`: not the cluster's.
fn resolve_in_zone(zone: &Zone, name: &str, qtype: RecordType) -> Option<Local> {
    if qtype == RecordType::PTR {
        let ip = parse_reverse(name)?;
        let names = zone.reverse(&ip);
        if names.is_empty() {
            // Addresses the cluster does not know are the node's resolvers' business.
            return None;
        }
        let owner = fqdn(name)?;
        let answers = names
            .iter()
            .filter_map(|n| fqdn(n))
            .map(|n| Record::from_rdata(owner.clone(), TTL, RData::PTR(PTR(n))))
            .collect();
        return Some(Local {
            answers,
            ..Local::default()
        });
    }
    if !zone.is_cluster_name(name) {
        return None;
    }
    let mut out = Local::default();
    let mut current = name.to_string();
    for _ in 0..MAX_CHAIN {
        let Some(owner) = fqdn(&current) else {
            out.rcode = ResponseCode::NXDomain;
            break;
        };
        match zone.lookup(&current) {
            Lookup::NoSuchName => {
                // After a CNAME the answer stays NOERROR with what was found.
                if out.answers.is_empty() {
                    out.rcode = ResponseCode::NXDomain;
                }
                break;
            }
            Lookup::EmptyNonTerminal => break,
            Lookup::Found(entry) => {
                if let Some(target) = &entry.cname {
                    if qtype == RecordType::CNAME {
                        if let Some(t) = fqdn(target) {
                            out.answers.push(Record::from_rdata(owner, TTL, RData::CNAME(CNAME(t))));
                        }
                        break;
                    }
                    let Some(t) = fqdn(target) else { break };
                    out.answers.push(Record::from_rdata(owner, TTL, RData::CNAME(CNAME(t))));
                    if zone.is_cluster_name(target) {
                        current = target.clone();
                        continue;
                    }
                    break;
                }
                for ip in entry.addrs.iter().filter(|ip| wants(qtype, ip)) {
                    out.answers.push(address_record(&owner, *ip));
                }
                if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    for s in &entry.srv {
                        let Some(target) = fqdn(&s.target) else { continue };
                        let srv = SRV::new(0, 100, s.port, target.clone());
                        out.answers
                            .push(Record::from_rdata(owner.clone(), TTL, RData::SRV(srv)));
                        if let Lookup::Found(t) = zone.lookup(&s.target) {
                            for ip in &t.addrs {
                                let rec = address_record(&target, *ip);
                                if !out.additionals.contains(&rec) {
                                    out.additionals.push(rec);
                                }
                            }
                        }
                    }
                }
                break;
            }
        }
    }
    if out.answers.is_empty() {
        out.soa = soa_record(zone.domain());
    }
    Some(out)
}

impl Handler {
    fn resolve(&self, name: &str, qtype: RecordType) -> Resolution {
        let zone = self.shared.zone();
        match resolve_in_zone(&zone, name, qtype) {
            // Nothing to answer from yet: a failure the client retries, never a false NXDOMAIN.
            Some(_) if !self.shared.synced() => Resolution::Local(Local {
                rcode: ResponseCode::ServFail,
                ..Local::default()
            }),
            Some(local) => Resolution::Local(local),
            None => Resolution::Forward,
        }
    }
}

/// Sends `query` (a whole DNS message) to the upstreams in turn; the first answer wins.
pub async fn exchange(upstreams: &[SocketAddr], query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    for up in upstreams {
        let attempt = async {
            if tcp {
                exchange_tcp(*up, query).await
            } else {
                exchange_udp(*up, query).await
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
            Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
        }
    }
    None
}

async fn exchange_udp(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if up.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to this query (same ID).
        if n >= 12 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(up).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    s.write_all(&framed).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Asks the upstreams for `name`/`qtype` (the target of an ExternalName outside the cluster).
async fn ask_upstream(upstreams: &[SocketAddr], name: &Name, qtype: RecordType) -> Option<Message> {
    let mut q = Message::query();
    q.metadata.id = rand_id();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name.clone(), qtype));
    let bytes = q.to_vec().ok()?;
    let answer = exchange(upstreams, &bytes, false).await?;
    Message::from_vec(&answer).ok()
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}

async fn send<R: ResponseHandler>(
    mut handle: R,
    request: &Request,
    metadata: Metadata,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> ResponseInfo {
    let builder = MessageResponseBuilder::new(&request.queries, request.edns.as_ref());
    let response = builder.build(
        metadata,
        answers.iter(),
        authorities.iter(),
        [].iter(),
        additionals.iter(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS response");
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata: m,
                counts: Default::default(),
            }
            .into()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, handle: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
            metadata.response_code = ResponseCode::NotImp;
            return send(handle, request, metadata, &[], &[], &[]).await;
        }
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(handle, request, metadata, &[], &[], &[]).await;
        };
        let name = info.query.name().to_string().trim_end_matches('.').to_ascii_lowercase();
        let qtype = info.query.query_type();
        match self.resolve(&name, qtype) {
            Resolution::Local(mut local) => {
                metadata.authoritative = true;
                metadata.recursion_available = true;
                // An ExternalName pointing outside the cluster: the target's records come from
                // the upstreams, so that stub resolvers (which do not chase CNAMEs) get them.
                if let Some(RData::CNAME(CNAME(target))) = local.answers.last().map(|r| r.data.clone()) {
                    let outside = !self
                        .shared
                        .zone()
                        .is_cluster_name(target.to_string().trim_end_matches('.').to_ascii_lowercase().as_str());
                    if outside && qtype != RecordType::CNAME {
                        if let Some(m) = ask_upstream(&self.upstreams, &target, qtype).await {
                            local.answers.extend(m.answers);
                        }
                    }
                }
                metadata.response_code = local.rcode;
                send(
                    handle,
                    request,
                    metadata,
                    &local.answers,
                    &local.soa,
                    &local.additionals,
                )
                .await
            }
            Resolution::Forward => {
                let tcp = request.protocol() == Protocol::Tcp;
                let answer = exchange(&self.upstreams, request.as_slice(), tcp)
                    .await
                    .and_then(|b| Message::from_vec(&b).ok());
                match answer {
                    Some(m) => {
                        let mut md = m.metadata;
                        md.id = request.metadata.id;
                        send(handle, request, md, &m.answers, &m.authorities, &m.additionals).await
                    }
                    None => {
                        metadata.response_code = ResponseCode::ServFail;
                        metadata.recursion_available = true;
                        send(handle, request, metadata, &[], &[], &[]).await
                    }
                }
            }
        }
    }
}
