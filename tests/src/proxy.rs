//! A UDP relay between agents and a controller. `cut()` drops every datagram both ways (as a
//! pulled cable would) until `restore()`; QUIC on either side sees silence, times out, and the
//! agent has to reconnect. Only loopback addresses are used.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;

pub struct UdpProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    pub async fn start(upstream: SocketAddr) -> UdpProxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy"));
        let addr = front.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(relay(front, upstream, cut.clone(), dropped.clone()));
        UdpProxy {
            addr,
            cut,
            dropped,
            task,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Datagrams dropped while cut (a test can check the cut really bit).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
) {
    // One upstream socket per client, so the controller sees distinct peers.
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        if cut.load(Ordering::SeqCst) {
            dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let back = {
            let mut map = peers.lock().await;
            match map.get(&client) {
                Some(s) => s.clone(),
                None => {
                    let Ok(s) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    let s = Arc::new(s);
                    map.insert(client, s.clone());
                    let (s2, front2, cut2, dropped2) =
                        (s.clone(), front.clone(), cut.clone(), dropped.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, _)) = s2.recv_from(&mut buf).await {
                            if cut2.load(Ordering::SeqCst) {
                                dropped2.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            let _ = front2.send_to(&buf[..n], client).await;
                        }
                    });
                    s
                }
            }
        };
        let _ = back.send_to(&buf[..n], upstream).await;
    }
}
