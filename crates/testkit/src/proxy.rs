use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProxyMode {
    /// Forwards both ways.
    Forward = 0,
    /// Closes every connection at once, as a stopped server or a dropped
    /// network does.
    Refuse = 1,
    /// Accepts and never answers: a stuck server, a dead network path.
    Silent = 2,
    /// Forwards the startup handshake of a plaintext PostgreSQL session up
    /// to the server's first ReadyForQuery, then goes silent both ways: a
    /// server that hangs once a session is open.
    SilentAfterHandshake = 3,
}

impl ProxyMode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ProxyMode::Refuse,
            2 => ProxyMode::Silent,
            3 => ProxyMode::SilentAfterHandshake,
            _ => ProxyMode::Forward,
        }
    }
}

/// A TCP proxy in front of PostgreSQL that a test can switch off (every open
/// connection is cut and new ones are closed at once, as when the server is
/// stopped or the network drops), make silent, and switch on again, without
/// disturbing the shared server other tests are using.
pub struct ToggleProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    cut: watch::Sender<u64>,
}

impl ToggleProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU8::new(ProxyMode::Forward as u8));
        let (cut, _) = watch::channel(0u64);
        let accept_mode = mode.clone();
        let accept_cut = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mode = ProxyMode::from_u8(accept_mode.load(Ordering::SeqCst));
                let cut_rx = accept_cut.subscribe();
                tokio::spawn(serve(inbound, upstream, mode, cut_rx));
            }
        });
        Self { addr, mode, cut }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the mode for new connections; open ones are cut unless the new
    /// mode is `Forward`.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode != ProxyMode::Forward {
            self.cut.send_modify(|n| *n += 1);
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.set_mode(ProxyMode::Refuse);
    }

    pub fn up(&self) {
        self.set_mode(ProxyMode::Forward);
    }
}

async fn serve(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    mode: ProxyMode,
    mut cut: watch::Receiver<u64>,
) {
    match mode {
        ProxyMode::Refuse => {}
        // Held open, never read or answered, until the test ends.
        ProxyMode::Silent => std::future::pending().await,
        ProxyMode::Forward => {
            let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        }
        ProxyMode::SilentAfterHandshake => {
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_server, mut to_server) = outbound.into_split();
            let upward = async {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                open = forward_until_ready(&mut from_server, &mut to_client) => if !open { return },
                _ = upward => return,
            }
            // Silent both ways from here on; the sockets stay open with
            // the task, until the test ends.
            std::future::pending::<()>().await;
        }
    }
}

/// Copies server messages to the client up to and including the first
/// ReadyForQuery ('Z'), when the session is open; false if the server
/// closed or refused first. (A plaintext session: an SSLRequest's one-byte
/// answer is not framed like the rest.)
async fn forward_until_ready(
    from_server: &mut (impl AsyncReadExt + Unpin),
    to_client: &mut (impl AsyncWriteExt + Unpin),
) -> bool {
    loop {
        let mut head = [0u8; 5];
        if from_server.read_exact(&mut head).await.is_err() {
            return false;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if from_server.read_exact(&mut body).await.is_err()
            || to_client.write_all(&head).await.is_err()
            || to_client.write_all(&body).await.is_err()
        {
            return false;
        }
        if head[0] == b'Z' {
            return true;
        }
    }
}
