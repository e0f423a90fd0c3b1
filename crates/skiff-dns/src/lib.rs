//! Skiff's cluster DNS.
//!
//! A node-local DNS server (the role CoreDNS plays in k3s, placed like NodeLocal DNSCache):
//! the agent gives the cluster DNS address (`10.43.0.10`) to a dummy interface on the node and
//! runs `skiff dns` in a process of its own, which outlives the agent and the API server as a
//! container's shim does. It answers from a watch cache of Services and EndpointSlices
//! ([`zone`]), keeps answering from it while the API server is away, and relays names outside
//! the cluster to the node's resolvers ([`server`]).
//!
//! Listeners and the DNS message codec are hickory-server's; the records are Skiff's.

pub mod server;
pub mod watch;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// hickory's DNS message types, for clients of the server (tests, benchmarks).
pub use hickory_server::proto;
pub use server::{exchange, Handler, Shared};
pub use zone::Zone;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Serves DNS on UDP and TCP at each of `listen` until the process ends.
pub async fn serve(shared: Arc<Shared>, upstreams: Vec<SocketAddr>, listen: &[SocketAddr]) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut server = hickory_server::Server::new(Handler::new(shared, upstreams));
    for addr in listen {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding DNS to udp {addr}"))?;
        server.register_socket(udp);
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding DNS to tcp {addr}"))?;
        server.register_listener(tcp, TCP_IDLE, 64);
    }
    server.block_until_done().await.context("DNS server")?;
    Ok(())
}

/// What `skiff dns` runs: the watch cache of `client`'s cluster and the listeners.
pub async fn run(
    client: kube::Client,
    domain: &str,
    upstreams: Vec<SocketAddr>,
    listen: &[SocketAddr],
) -> anyhow::Result<()> {
    let shared = Shared::new(domain);
    let watch = tokio::spawn(watch::run(client, domain.to_string(), shared.clone()));
    let served = serve(shared, upstreams, listen).await;
    watch.abort();
    served
}
