//! Network faults that work on any server: a small TCP proxy on a loopback port in
//! front of one server address (declared from `tests/support/mod.rs`).
//!
//! Give each member its own [`FaultProxy`] and its connection string from
//! [`FaultProxy::uri`] (or [`FaultProxy::proxied`]); [`FaultProxy::set`] then changes
//! what happens to that member's traffic at run time, on the connections already
//! open and on new ones: [`Fault::None`] passes bytes through, and the other
//! [`Fault`]s add latency, blackhole, reset, or close a connection after some bytes.
//! The proxy works on whole TCP reads: it knows nothing of the wire protocol.
//!
//! The proxy's tasks run on the tokio runtime that started it; dropping the
//! `FaultProxy` stops accepting and closes every connection it carries.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a [`FaultProxy`] does to the traffic it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Pass every byte through at once.
    #[default]
    None,
    /// Hold each read for `to_server` on its way to the server, and for
    /// `to_client` on its way back, before passing it on (in order).
    Latency {
        /// Delay of client-to-server data.
        to_server: Duration,
        /// Delay of server-to-client data.
        to_client: Duration,
    },
    /// Accept connections and read from them, but pass nothing on in either
    /// direction: requests are never answered. Bytes read while blackholed are
    /// lost, so a connection that carried traffic then is broken for good.
    Blackhole,
    /// Reset (TCP RST) every open connection at once, and reset each new one as
    /// soon as it is accepted, while this fault is set.
    Reset,
    /// Close each connection (a normal close, both sides) once it has passed
    /// `bytes` bytes, counting both directions from the moment this fault is set
    /// or the connection opened, whichever is later.
    CloseAfter {
        /// How many bytes a connection may pass before it is closed.
        bytes: u64,
    },
}

/// The fault currently set, with a number that grows with every [`FaultProxy::set`]
/// (so that a [`Fault::CloseAfter`] byte budget starts afresh each time).
#[derive(Clone, Copy, Debug)]
struct Setting {
    generation: u64,
    fault: Fault,
}

/// A TCP proxy on `127.0.0.1:<free port>` in front of one server address, whose
/// [`Fault`] can be changed at run time.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    setting: watch::Sender<Setting>,
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` with [`Fault::None`].
    ///
    /// # Panics
    /// If no loopback port can be bound, or outside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fault proxy: cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy: no local address: {e}"));
        let (setting, _) = watch::channel(Setting {
            generation: 0,
            fault: Fault::None,
        });
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            setting.clone(),
            Arc::clone(&open),
        ));
        FaultProxy {
            addr,
            upstream,
            setting,
            open,
            accept,
        }
    }

    /// Starts a proxy in front of the one server named by the connection string
    /// `uri` (`mongodb://[user:password@]host:port[/db][?options]`); use
    /// [`proxied`](Self::proxied) for the same string pointed at the proxy.
    ///
    /// # Panics
    /// If `uri` does not name exactly one `host:port` that resolves (the message says
    /// what to write), or as [`start`](Self::start).
    pub async fn in_front_of(uri: &str) -> FaultProxy {
        FaultProxy::start(single_host(uri)).await
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A connection string to the proxy for database `db`, with
    /// `directConnection=true` (the driver must not discover the server's own
    /// address and go around the proxy).
    pub fn uri(&self, db: &str) -> String {
        format!("mongodb://{}/{db}?directConnection=true", self.addr)
    }

    /// `uri` with its host replaced by the proxy's address and `directConnection=true`
    /// added: credentials, database and other options are kept.
    ///
    /// # Panics
    /// If `uri` does not have the form of [`in_front_of`](Self::in_front_of).
    pub fn proxied(&self, uri: &str) -> String {
        let parts = split_uri(uri).unwrap_or_else(|e| panic!("{e}"));
        let mut options: Vec<&str> = parts
            .query
            .unwrap_or_default()
            .split('&')
            .filter(|o| {
                let key = o.split('=').next().unwrap_or_default();
                !o.is_empty() && !key.eq_ignore_ascii_case("directConnection")
            })
            .collect();
        options.push("directConnection=true");
        let query = options.join("&");
        format!(
            "mongodb://{}{}/{}?{query}",
            parts.userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
            self.addr,
            parts.path
        )
    }

    /// Sets the fault for the open connections and the new ones.
    pub fn set(&self, fault: Fault) {
        self.setting.send_modify(|s| {
            s.generation += 1;
            s.fault = fault;
        });
    }

    /// The fault currently set.
    pub fn fault(&self) -> Fault {
        self.setting.borrow().fault
    }

    /// How many client connections the proxy holds open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Stops accepting; the connections end when they see the sender gone.
        self.accept.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("fault", &self.fault())
            .finish_non_exhaustive()
    }
}

/// The parts of a `mongodb://` connection string.
struct UriParts<'a> {
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

fn split_uri(uri: &str) -> Result<UriParts<'_>, String> {
    let shape = "write mongodb://[user:password@]host:port[/db][?options] with one host";
    let Some(rest) = uri.strip_prefix("mongodb://") else {
        // Never echo the string: it may hold a password.
        return Err(format!(
            "fault proxy: the connection string is not mongodb://...; {shape}"
        ));
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let tail = tail.strip_prefix('/').unwrap_or(tail);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    if hosts.is_empty() || hosts.contains(',') {
        return Err(format!(
            "fault proxy: the connection string must name exactly one server (host {hosts:?}); {shape}"
        ));
    }
    Ok(UriParts {
        userinfo,
        hosts,
        path,
        query,
    })
}

/// The address of the one server of `uri`.
fn single_host(uri: &str) -> SocketAddr {
    let parts = split_uri(uri).unwrap_or_else(|e| panic!("{e}"));
    let host = if parts.hosts.contains(':') {
        parts.hosts.to_owned()
    } else {
        format!("{}:27017", parts.hosts)
    };
    host.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("fault proxy: cannot resolve the server address {host:?}"))
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    setting: watch::Sender<Setting>,
    open: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await; // e.g. out of descriptors
            continue;
        };
        let rx = setting.subscribe();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            open.fetch_add(1, Ordering::SeqCst);
            serve(client, upstream, rx).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// One side closed (or failed), or the byte budget ran out: close both.
    Close,
    /// A [`Fault::Reset`]: reset both.
    Reset,
}

/// Makes dropping `stream` send a TCP RST instead of a normal close.
fn abort(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mut rx: watch::Receiver<Setting>) {
    if rx.borrow_and_update().fault == Fault::Reset {
        abort(&client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        abort(&client); // the server is down: so is the proxied one
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The CloseAfter budget of this connection: (generation, bytes left).
    let budget = Mutex::new((u64::MAX, 0_u64));
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            end = pump(client_read, server_write, true, rx.clone(), &budget) => end,
            end = pump(server_read, client_write, false, rx.clone(), &budget) => end,
            end = reset_or_gone(&mut rx) => end,
        }
    };
    if end == End::Reset {
        abort(&client);
        abort(&server);
    }
}

/// Resolves when the fault becomes [`Fault::Reset`], or when the proxy is dropped.
async fn reset_or_gone(rx: &mut watch::Receiver<Setting>) -> End {
    loop {
        if rx.borrow_and_update().fault == Fault::Reset {
            return End::Reset;
        }
        if rx.changed().await.is_err() {
            return End::Close;
        }
    }
}

/// Copies `from` to `to` under the current fault until the connection ends.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    to_server: bool,
    rx: watch::Receiver<Setting>,
    budget: &Mutex<(u64, u64)>,
) -> End {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Close,
            Ok(n) => n,
        };
        let setting = *rx.borrow();
        let pass = match setting.fault {
            Fault::None => n,
            Fault::Latency {
                to_server: up,
                to_client: down,
            } => {
                tokio::time::sleep(if to_server { up } else { down }).await;
                n
            }
            Fault::Blackhole => 0,
            Fault::Reset => return End::Reset,
            Fault::CloseAfter { bytes } => {
                let mut b = budget.lock().unwrap_or_else(|p| p.into_inner());
                if b.0 != setting.generation {
                    *b = (setting.generation, bytes);
                }
                let pass = b.1.min(n as u64);
                b.1 -= pass;
                pass as usize
            }
        };
        if pass > 0 && to.write_all(&buf[..pass]).await.is_err() {
            return End::Close;
        }
        if let Fault::CloseAfter { .. } = setting.fault {
            let b = budget.lock().unwrap_or_else(|p| p.into_inner());
            if b.0 == setting.generation && b.1 == 0 {
                return End::Close;
            }
        }
    }
}
