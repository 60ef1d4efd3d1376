//! The `pier` library as an embedding program uses it: the server event
//! stream, and sending to a connection through its `NewCsa` handle.

use crate::common::{STEP, guest};
use pier::{ListenAddr, ListenerConfig, Server, ServerConfig, ServerEvent, ShutdownReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::timeout;

async fn echo_server() -> (std::net::SocketAddr, broadcast::Receiver<ServerEvent>, pier::ShutdownHandle) {
    let listen = ListenAddr::parse_addr("127.0.0.1:0").unwrap();
    let mut config = ListenerConfig::new("embedded", listen, guest("echo"));
    config.max_connections = 16;
    let server = Server::bind(ServerConfig::new(vec![config])).await.expect("bind");
    let addr = server.local_addrs()[0].1;
    let events = server.subscribe();
    let stop = server.shutdown_handle();
    tokio::spawn(server.run());
    (addr, events, stop)
}

async fn next(events: &mut broadcast::Receiver<ServerEvent>) -> ServerEvent {
    timeout(STEP, events.recv()).await.expect("an event in time").expect("event stream open")
}

/// The next event must end connection `id`; returns its reason.
async fn shutdown_of(events: &mut broadcast::Receiver<ServerEvent>, id: u64) -> ShutdownReason {
    match next(events).await {
        ServerEvent::ShutdownCsa { id: closed, reason, .. } => {
            assert_eq!(closed, id);
            reason
        }
        other => panic!("expected ShutdownCsa, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_new_csa_then_peer_closed() {
    let (addr, mut events, stop) = echo_server().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let client_local = client.local_addr().unwrap();
    let ServerEvent::NewCsa { id, listener, peer, local, .. } = next(&mut events).await else {
        panic!("first event must be NewCsa")
    };
    assert_eq!(&*listener, "embedded");
    assert_eq!(peer, client_local);
    assert_eq!(local, addr);
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    timeout(STEP, client.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hi");
    drop(client);
    assert_eq!(shutdown_of(&mut events, id).await, ShutdownReason::PeerClosed);
    stop.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_sends_to_the_peer_and_finish_closes_after_the_bytes() {
    let (addr, mut events, stop) = echo_server().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let ServerEvent::NewCsa { id, handle, .. } = next(&mut events).await else { panic!("expected NewCsa") };
    assert_eq!(handle.id(), id);
    let broadcast = b"operator: maintenance at noon\n".repeat(1000);
    handle.send(broadcast.clone()).expect("the outbox takes it");
    handle.finish();
    assert_eq!(handle.send(b"late".to_vec()), Err(pier::SendError::Closed));
    let mut got = Vec::new();
    timeout(STEP, client.read_to_end(&mut got)).await.expect("EOF in time").unwrap();
    assert!(got == broadcast, "client got {} bytes, expected {}", got.len(), broadcast.len());
    assert_eq!(shutdown_of(&mut events, id).await, ShutdownReason::Finished);
    stop.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_close_ends_the_connection() {
    let (addr, mut events, stop) = echo_server().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let ServerEvent::NewCsa { handle, .. } = next(&mut events).await else { panic!("expected NewCsa") };
    handle.close();
    let mut got = Vec::new();
    // EOF or reset, promptly.
    let _ = timeout(STEP, client.read_to_end(&mut got)).await.expect("closed in time");
    assert!(got.is_empty());
    let ServerEvent::ShutdownCsa { reason, .. } = next(&mut events).await else { panic!("expected ShutdownCsa") };
    assert_eq!(reason, ShutdownReason::Closed);
    stop.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_handle_stops_the_server() {
    let listen = ListenAddr::parse_addr("127.0.0.1:0").unwrap();
    let server = Server::bind(ServerConfig::new(vec![ListenerConfig::new("s", listen, guest("echo"))])).await.unwrap();
    let addr = server.local_addrs()[0].1;
    let mut events = server.subscribe();
    let stop = server.shutdown_handle();
    let run = tokio::spawn(server.run());
    let mut client = TcpStream::connect(addr).await.unwrap();
    let ServerEvent::NewCsa { .. } = next(&mut events).await else { panic!("expected NewCsa") };
    stop.shutdown();
    let mut got = Vec::new();
    timeout(STEP, client.read_to_end(&mut got)).await.expect("closed in time").unwrap();
    let ServerEvent::ShutdownCsa { reason, .. } = next(&mut events).await else { panic!("expected ShutdownCsa") };
    assert_eq!(reason, ShutdownReason::ServerShutdown);
    timeout(STEP, run).await.expect("run returns").unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_shows_as_peer_reset() {
    let (addr, mut events, stop) = echo_server().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let ServerEvent::NewCsa { id, .. } = next(&mut events).await else { panic!("expected NewCsa") };
    client.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    timeout(STEP, client.read_exact(&mut buf)).await.unwrap().unwrap();
    // SO_LINGER 0: close sends RST.
    socket2::SockRef::from(&client).set_linger(Some(std::time::Duration::ZERO)).unwrap();
    drop(client);
    assert_eq!(shutdown_of(&mut events, id).await, ShutdownReason::PeerReset);
    stop.shutdown();
}

#[test]
fn instantiate_cost_is_measurable() {
    let times = pier::measure::instantiate_cost(&guest("echo"), 200).expect("measure");
    assert_eq!(times.len(), 200);
    let mut sorted = times.clone();
    sorted.sort();
    eprintln!("instantiate + new-csa: median {:?}, p99 {:?}", sorted[100], sorted[197]);
    assert!(sorted[100] > std::time::Duration::ZERO);
}
