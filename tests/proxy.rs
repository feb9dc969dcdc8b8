//! The fault proxy of `tests/support/proxy.rs`: each fault, first on raw TCP in front
//! of a small echo server (exact bytes), then with the MongoDB driver in front of
//! every selected server (`FAILOVER_TEST_SERVER`): pass-through, added latency, a
//! blackholed member's command that never returns, a reset that is a network error,
//! and a connection closed after N bytes. Wall-clock bounds: the lower ones are what
//! the proxy must add; the upper ones have a wide margin for a loaded 2-core machine.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mongodb::bson::doc;
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongodb::Client;
use support::proxy::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A loopback echo server for the raw TCP tests.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `data` and reads the echo of it, within 2 s.
async fn round_trip(conn: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(data).await?;
    let mut got = vec![0_u8; data.len()];
    timeout(Duration::from_secs(2), conn.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo within 2 s"))??;
    Ok(got)
}

#[tokio::test]
async fn raw_tcp_passes_through_and_delays_each_direction() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"hello").await.unwrap(), b"hello");
    assert_eq!(proxy.open_connections(), 1);

    proxy.set(Fault::Latency {
        to_server: ms(150),
        to_client: ms(100),
    });
    let t = Instant::now();
    assert_eq!(round_trip(&mut conn, b"slow").await.unwrap(), b"slow");
    let took = t.elapsed();
    assert!(
        took >= ms(250) && took < ms(1500),
        "150 ms + 100 ms of latency took {took:?}"
    );

    proxy.set(Fault::None);
    let t = Instant::now();
    assert_eq!(round_trip(&mut conn, b"fast").await.unwrap(), b"fast");
    assert!(t.elapsed() < ms(200), "pass-through took {:?}", t.elapsed());
}

#[tokio::test]
async fn raw_tcp_blackhole_reads_but_never_answers() {
    let proxy = FaultProxy::start(echo_server().await).await;
    proxy.set(Fault::Blackhole);
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    conn.write_all(b"anyone?").await.unwrap(); // accepted and read
    let mut buf = [0_u8; 16];
    assert!(
        timeout(ms(800), conn.read(&mut buf)).await.is_err(),
        "a blackholed connection answered or closed"
    );
    assert_eq!(proxy.open_connections(), 1, "the connection stays open");
    // A fresh connection after the fault is lifted passes again.
    proxy.set(Fault::None);
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"back").await.unwrap(), b"back");
}

/// True for the error of a read or write on a connection that was reset.
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

#[tokio::test]
async fn raw_tcp_reset_resets_open_and_new_connections() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut open, b"one").await.unwrap(), b"one");

    proxy.set(Fault::Reset);
    let mut buf = [0_u8; 8];
    let read = timeout(ms(1000), open.read(&mut buf)).await;
    match read {
        Ok(Err(e)) if is_reset(&e) => {}
        other => panic!("an open connection was not reset: {other:?}"),
    }
    // New connections are accepted and reset at once.
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    match timeout(ms(1000), new.read(&mut buf)).await {
        Ok(Err(e)) if is_reset(&e) => {}
        other => panic!("a new connection was not reset: {other:?}"),
    }

    proxy.set(Fault::None);
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"two").await.unwrap(), b"two");
}

#[tokio::test]
async fn raw_tcp_close_after_n_bytes() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"before").await.unwrap(), b"before");
    // 10 bytes from now on, both directions: 5 out and their 5 back, then closed.
    proxy.set(Fault::CloseAfter { bytes: 10 });
    assert_eq!(round_trip(&mut conn, b"12345").await.unwrap(), b"12345");
    let mut buf = [0_u8; 8];
    let n = timeout(ms(1000), conn.read(&mut buf))
        .await
        .expect("the proxy closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected end of stream after 10 bytes");

    // A new connection gets its own 10 bytes: 7 pass out, 3 of the echo come back.
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    conn.write_all(b"abcdefg").await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(ms(1000), conn.read_to_end(&mut got)).await;
    assert_eq!(got, b"abc", "7 bytes out + 3 back = 10, then closed");
}

/// A client through `proxy` to a server of the test's kind: one connection, short
/// server selection, its own app name.
async fn client_through(proxy: &FaultProxy, uri: &str, app: &str) -> Client {
    let mut options = ClientOptions::parse(proxy.proxied(uri)).await.unwrap();
    options.app_name = Some(app.to_owned());
    options.server_selection_timeout = Some(ms(1500));
    options.connect_timeout = Some(ms(1000));
    options.max_pool_size = Some(1);
    Client::with_options(options).unwrap()
}

async fn ping(client: &Client) -> mongodb::error::Result<()> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map(drop)
}

/// The median time of `n` pings.
async fn median_ping(client: &Client, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ping(client).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// True for the driver's errors of a broken connection: an I/O error, or no
/// server to select because the monitor saw it fail.
fn is_network(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
    )
}

/// Pings until one succeeds, for at most `limit`.
async fn recovers(client: &Client, limit: Duration) {
    let t = Instant::now();
    loop {
        match timeout(ms(1000), ping(client)).await {
            Ok(Ok(())) => return,
            _ if t.elapsed() > limit => {
                panic!("no successful ping within {limit:?} after the fault")
            }
            _ => sleep(ms(100)).await,
        }
    }
}

support::server_tests! {
    /// Latency through the proxy adds to the driver's round trip.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_driver_sees_the_added_latency(uri: String) {
        let proxy = FaultProxy::in_front_of(&uri).await;
        let client = client_through(&proxy, &uri, "proxy-latency").await;
        let base = median_ping(&client, 5).await;
        proxy.set(Fault::Latency { to_server: ms(200), to_client: ms(100) });
        let slow = median_ping(&client, 3).await;
        assert!(
            slow >= ms(300) && slow < base + ms(300) + ms(1500),
            "with 200 ms + 100 ms of latency a ping took {slow:?} (without: {base:?})"
        );
        proxy.set(Fault::None);
        let back = median_ping(&client, 3).await;
        assert!(back < ms(300), "after the latency was lifted a ping took {back:?}");
    }

    /// A blackholed member's command never returns (the Rust driver has no socket
    /// timeout: the caller's deadline is what ends it); lifting the fault lets the
    /// member reach the server again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blackholed_members_command_times_out(uri: String) {
        let proxy = FaultProxy::in_front_of(&uri).await;
        let client = client_through(&proxy, &uri, "proxy-blackhole").await;
        ping(&client).await.unwrap();
        proxy.set(Fault::Blackhole);
        match timeout(ms(1500), ping(&client)).await {
            Err(_) => {} // hung: what a blackhole does
            Ok(Err(e)) if is_network(&e) => {} // the driver's monitor gave up on it first
            Ok(other) => panic!("a blackholed ping returned: {other:?}"),
        }
        // A client that is not blackholed still reaches the server.
        let direct = Client::with_uri_str(&uri).await.unwrap();
        ping(&direct).await.unwrap();
        proxy.set(Fault::None);
        recovers(&client, Duration::from_secs(10)).await;
    }

    /// A reset gives the driver a network error at once, and keeps giving one while
    /// it is on; then the member reconnects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_gives_a_network_error(uri: String) {
        let proxy = FaultProxy::in_front_of(&uri).await;
        let client = client_through(&proxy, &uri, "proxy-reset").await;
        ping(&client).await.unwrap();
        proxy.set(Fault::Reset);
        for attempt in 0..2 {
            let t = Instant::now();
            let result = timeout(Duration::from_secs(5), ping(&client))
                .await
                .unwrap_or_else(|_| panic!("attempt {attempt}: a ping during a reset hung"));
            let err = result.expect_err("a ping through a reset connection succeeded");
            assert!(is_network(&err), "attempt {attempt}: not a network error: {err}");
            // At most the server selection timeout (1.5 s) plus a margin.
            assert!(t.elapsed() < ms(3500), "attempt {attempt}: the error took {:?}", t.elapsed());
        }
        proxy.set(Fault::None);
        recovers(&client, Duration::from_secs(10)).await;
    }

    /// A connection closed after a few bytes fails the command in flight with a
    /// network error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_closed_mid_message_is_a_network_error(uri: String) {
        let proxy = FaultProxy::in_front_of(&uri).await;
        let client = client_through(&proxy, &uri, "proxy-close").await;
        ping(&client).await.unwrap();
        proxy.set(Fault::CloseAfter { bytes: 10 }); // less than any OP_MSG
        let result = timeout(Duration::from_secs(5), ping(&client))
            .await
            .expect("a ping through a closing connection hung");
        let err = result.expect_err("a ping through a connection closed after 10 bytes succeeded");
        assert!(is_network(&err), "not a network error: {err}");
        proxy.set(Fault::None);
        recovers(&client, Duration::from_secs(10)).await;
    }
}
