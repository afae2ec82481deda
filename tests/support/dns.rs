//! An authoritative DNS server on 127.0.0.1 serving the test zones.
//!
//! UDP and TCP on one random port, for the binaries to ask with `--nameserver`. Names at or
//! below `servfail.example` answer SERVFAIL. The server runs on its own thread and stops when the
//! handle is dropped.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

/// The forward zone. The probe tests connect only to hosts of the `*.probe.example` domains,
/// queue-run's only to hosts of `*.run.example` (port 25, so those tests need root), all on
/// loopback. Reverse names of loopback addresses are always `localhost` (RFC 6761, the
/// resolver answers them itself), so reverse lookups are tested on documentation addresses
/// (RFC 5737) that appear only as DNS data and are never connected to.
pub const EXAMPLE_ZONE: &str = r#"
$ORIGIN example.
$TTL 60
@               IN SOA  ns.example. hostmaster.example. 1 3600 600 86400 60
@               IN NS   ns.example.
ns              IN A    127.0.0.1

; MX 10/20/20: the site and its ISP's two backup MX hosts
customer        IN MX   10 mx.customer.example.
customer        IN MX   20 mx2.isp.example.
customer        IN MX   20 mx3.isp.example.
mx.customer     IN A    127.0.0.2
mx.customer     IN AAAA ::1
mx2.isp         IN A    192.0.2.3
mx3.isp         IN A    192.0.2.4

nullmx          IN MX   0 .
implicit        IN A    127.0.0.5
nothing         IN TXT  "neither MX nor address"

aliased         IN MX   10 alias.aliased.example.
alias.aliased   IN CNAME mx.customer.example.

noaddr          IN MX   10 mx.customer.example.
noaddr          IN MX   20 ghost.noaddr.example.
noaddr          IN MX   30 missing.noaddr.example.
ghost.noaddr    IN TXT  "a name without address"

allgone         IN MX   10 missing.allgone.example.

literal         IN MX   10 127.0.0.2.
literal         IN MX   20 mx.customer.example.

brokenmx        IN MX   10 mx.customer.example.
brokenmx        IN MX   20 mx.servfail.example.

; probe targets: one SMTP server per loopback address
accept.probe    IN A    127.0.0.11
deny.probe      IN A    127.0.0.12
tls.probe       IN A    127.0.0.13
silent.probe    IN A    127.0.0.14
ok.probe        IN MX   10 accept.probe.example.
relaydenied.probe IN MX 10 accept.probe.example.
relaydenied.probe IN MX 20 deny.probe.example.
tls-site.probe  IN MX   10 tls.probe.example.
slow.probe      IN MX   10 accept.probe.example.
slow.probe      IN MX   20 silent.probe.example.
dead.probe      IN MX   10 silent.probe.example.

; queue-run routing: SMTP servers on port 25 of 127.0.25.0/24, one address per host
fallback.run    IN MX   10 dead.run.example.
fallback.run    IN MX   20 live.run.example.
dead.run        IN A    127.0.25.1
live.run        IN A    127.0.25.2
nullmx.run      IN MX   0 .
backup.run      IN MX   10 primary.run.example.
backup.run      IN MX   20 mx2.run.example.
backup.run      IN MX   20 peer.run.example.
selfbest.run    IN MX   10 mx2.run.example.
selfbest.run    IN MX   20 peer.run.example.
; etrn-send --mx: the site and its ISP's backup MX hosts at one preference, on 127.0.36.0/24
backups.etrn    IN MX   10 site.etrn.example.
backups.etrn    IN MX   20 b1.etrn.example.
backups.etrn    IN MX   20 b2.etrn.example.
backups.etrn    IN MX   20 b3.etrn.example.
ghostly.etrn    IN MX   10 site.etrn.example.
ghostly.etrn    IN MX   20 b1.etrn.example.
ghostly.etrn    IN MX   20 ghost.etrn.example.
lonely.etrn     IN MX   10 site.etrn.example.
site.etrn       IN A    127.0.36.1
b1.etrn         IN A    127.0.36.11
b2.etrn         IN A    127.0.36.12
b3.etrn         IN A    127.0.36.13
ghost.etrn      IN TXT  "a backup MX without address"
primary.run     IN A    127.0.25.3
mx2.run         IN A    127.0.25.4
peer.run        IN A    127.0.25.5
"#;

const REVERSE_ZONE: &str = r#"
$ORIGIN 2.0.192.in-addr.arpa.
$TTL 60
@               IN SOA  ns.example. hostmaster.example. 1 3600 600 86400 60
@               IN NS   ns.example.
3               IN PTR  mx2.isp.example.
"#;

pub struct DnsServer {
    /// The server's address as the `--nameserver` argument.
    pub addr_text: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("bound socket has an address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(async move {
                let mut server = Server::new(Handler::new());
                udp.set_nonblocking(true).expect("nonblocking udp");
                tcp.set_nonblocking(true).expect("nonblocking tcp");
                server.register_socket(tokio::net::UdpSocket::from_std(udp).expect("udp"));
                server.register_listener(
                    tokio::net::TcpListener::from_std(tcp).expect("tcp"),
                    Duration::from_secs(5),
                    4096,
                );
                let _ = stopped.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        DnsServer {
            addr_text: addr.to_string(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp on loopback");
        let port = udp.local_addr().expect("udp address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

struct Handler {
    catalog: Catalog,
    servfail: LowerName,
}

impl Handler {
    fn new() -> Handler {
        let mut catalog = Catalog::new();
        for text in [EXAMPLE_ZONE, REVERSE_ZONE] {
            let (origin, records) = Parser::new(text, None, None)
                .parse()
                .expect("test zone parses");
            let zone = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .expect("test zone loads");
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        }
        Handler {
            catalog,
            servfail: LowerName::new(&Name::from_ascii("servfail.example.").expect("name")),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let failing = request
            .request_info()
            .is_ok_and(|info| self.servfail.zone_of(info.query.name()));
        if !failing {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        }
        let response = MessageResponseBuilder::new(&request.queries, None)
            .error_msg(&request.metadata, ResponseCode::ServFail);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: HeaderCounts::default(),
            }
            .into(),
        }
    }
}

/// A name server that never answers: UDP datagrams are read and dropped, TCP connections are
/// accepted and left silent. For timeout tests.
pub struct SilentDns {
    pub addr: SocketAddr,
    _udp: UdpSocket,
    _tcp: TcpListener,
}

impl SilentDns {
    pub fn start() -> SilentDns {
        let (udp, tcp) = bind_pair();
        SilentDns {
            addr: udp.local_addr().expect("udp address"),
            _udp: udp,
            _tcp: tcp,
        }
    }
}
