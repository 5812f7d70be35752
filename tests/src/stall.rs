//! A dependency that stops answering: a TCP proxy in front of the emulator.
//! Stalled, it still accepts connections and reads what is sent, but forwards
//! nothing and answers nothing, for as long as the client waits. Losing
//! answers, it forwards every request (the write happens) and drops what comes
//! back. A connection that stalled stays silent after
//! [`StallProxy::resume`]; new connections go through again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const PASS: u8 = 0;
const STALL: u8 = 1;
const LOSE_ANSWERS: u8 = 2;

#[derive(Debug, Clone)]
pub struct StallProxy {
    address: SocketAddr,
    mode: Arc<AtomicU8>,
}

impl StallProxy {
    /// A proxy on a free port of 127.0.0.1, forwarding to `upstream` (an
    /// `http://host:port` endpoint).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        let address = listener.local_addr().expect("a local address");
        let mode = Arc::new(AtomicU8::new(PASS));
        let shared = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), shared.clone()));
            }
        });
        Self { address, mode }
    }

    /// The endpoint to give the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Nothing reaches the emulator, nothing comes back.
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
    }

    /// Every request reaches the emulator; no answer comes back.
    pub fn lose_answers(&self) {
        self.mode.store(LOSE_ANSWERS, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, upstream: String, mode: Arc<AtomicU8>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answers_mode = mode.clone();
    let requests = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if mode.load(Ordering::SeqCst) == STALL {
                // Swallow everything until the client gives up.
                while matches!(from_client.read(&mut buffer).await, Ok(n) if n > 0) {}
                return;
            }
            let Some(chunk) = buffer.get(..read) else {
                return;
            };
            if to_server.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let answers = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut losing = false;
        loop {
            let read = match from_server.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            // Once an answer is lost, the connection never answers again.
            losing = losing || answers_mode.load(Ordering::SeqCst) == LOSE_ANSWERS;
            if losing {
                continue;
            }
            let Some(chunk) = buffer.get(..read) else {
                return;
            };
            if to_client.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}
