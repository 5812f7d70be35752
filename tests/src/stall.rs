//! A dependency that stops answering: a TCP proxy in front of the emulator
//! that, once stalled, still accepts connections and reads what is sent, but
//! forwards nothing and answers nothing, for as long as the client waits.
//! A connection that stalled stays silent after [`StallProxy::resume`]; new
//! connections go through again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct StallProxy {
    address: SocketAddr,
    stalled: Arc<AtomicBool>,
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
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), flag.clone()));
            }
        });
        Self { address, stalled }
    }

    /// The endpoint to give the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, upstream: String, stalled: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if stalled.load(Ordering::SeqCst) {
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
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}
