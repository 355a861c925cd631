//! A tiny HTTP server that answers every request with a JWKS document and
//! counts the requests: enough for reqwest, nothing more.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    response: Mutex<(u16, String)>,
    requests: AtomicUsize,
}

impl JwksServer {
    pub async fn start(body: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            response: Mutex::new((200, body.into())),
            requests: AtomicUsize::new(0),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, served.clone()));
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Serves `body` (200) from now on.
    pub fn serve(&self, body: impl Into<String>) {
        *self.state.response.lock().unwrap() = (200, body.into());
    }

    /// Answers `status` with an error body from now on.
    pub fn fail_with(&self, status: u16) {
        *self.state.response.lock().unwrap() = (status, "{\"error\":\"down\"}".into());
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, state: Arc<State>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return;
        }
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (status, body) = state.response.lock().unwrap().clone();
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A JWK set of the given JWK documents.
pub fn jwk_set(keys: &[&str]) -> String {
    format!("{{\"keys\":[{}]}}", keys.join(","))
}
