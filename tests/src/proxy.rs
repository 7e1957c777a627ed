//! A UDP relay between agents and a controller. `cut()` drops every datagram both ways (as a
//! pulled cable would) until `restore()`; QUIC on either side sees silence, times out, and the
//! agent has to reconnect. An [`Impairment`] makes it a far, lossy link instead: each datagram
//! is held for a fixed delay each way and a share of them is dropped at random (the kernel's
//! netem is not available here). Only loopback and test-fleet addresses are used.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

/// What the link does to each datagram, each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    pub delay: Duration,
    /// The share of datagrams dropped, 0.0–1.0.
    pub loss: f64,
}

impl Impairment {
    /// The far datacenter of the fleet tests and benchmarks: 50 ms each way, 1 % lost.
    pub const FAR: Impairment = Impairment {
        delay: Duration::from_millis(50),
        loss: 0.01,
    };
}

#[derive(Default)]
struct Counters {
    cut: AtomicBool,
    /// Dropped while cut.
    dropped: AtomicU64,
    /// Dropped by the random loss.
    lost: AtomicU64,
    relayed: AtomicU64,
}

pub struct UdpProxy {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    /// A clean relay on loopback.
    pub async fn start(upstream: SocketAddr) -> UdpProxy {
        UdpProxy::start_on(Ipv4Addr::LOCALHOST.into(), upstream, Impairment::default()).await
    }

    /// A relay listening on `ip` (a port the kernel picks) that impairs the link.
    pub async fn start_on(ip: IpAddr, upstream: SocketAddr, link: Impairment) -> UdpProxy {
        let front = Arc::new(
            UdpSocket::bind(SocketAddr::new(ip, 0))
                .await
                .expect("bind proxy"),
        );
        let addr = front.local_addr().expect("proxy addr");
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(relay(front, ip, upstream, link, counters.clone()));
        UdpProxy {
            addr,
            counters,
            task,
        }
    }

    pub fn cut(&self) {
        self.counters.cut.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.counters.cut.store(false, Ordering::SeqCst);
    }

    /// Datagrams dropped while cut (a test can check the cut really bit).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::SeqCst)
    }

    /// Datagrams dropped by the impairment's random loss.
    pub fn lost(&self) -> u64 {
        self.counters.lost.load(Ordering::SeqCst)
    }

    /// Datagrams passed on, both ways.
    pub fn relayed(&self) -> u64 {
        self.counters.relayed.load(Ordering::SeqCst)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction of the link: datagrams wait in order for their release time (the delay is the
/// same for all, so arrival order is release order), then go out of `socket` to `to`.
#[derive(Clone)]
struct DelayLine {
    delay: Duration,
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
}

impl DelayLine {
    fn new(socket: Arc<UdpSocket>, to: SocketAddr, delay: Duration) -> DelayLine {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((at, d)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                let _ = socket.send_to(&d, to).await;
            }
        });
        DelayLine { delay, tx }
    }

    fn send(&self, datagram: &[u8]) {
        let _ = self
            .tx
            .send((Instant::now() + self.delay, datagram.to_vec()));
    }
}

/// A small xorshift generator: the loss needs to be random, not cryptographic.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Dice(seed | 1)
    }

    fn roll(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether a datagram goes on: not while cut, and not when the dice say it is lost.
fn passes(c: &Counters, link: &Impairment, dice: &mut Dice) -> bool {
    if c.cut.load(Ordering::SeqCst) {
        c.dropped.fetch_add(1, Ordering::SeqCst);
        return false;
    }
    if link.loss > 0.0 && dice.roll() < link.loss {
        c.lost.fetch_add(1, Ordering::SeqCst);
        return false;
    }
    c.relayed.fetch_add(1, Ordering::SeqCst);
    true
}

async fn relay(
    front: Arc<UdpSocket>,
    ip: IpAddr,
    upstream: SocketAddr,
    link: Impairment,
    counters: Arc<Counters>,
) {
    // One upstream socket per client, so the controller sees distinct peers.
    let peers: Arc<Mutex<HashMap<SocketAddr, DelayLine>>> = Arc::default();
    let mut dice = Dice::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        if !passes(&counters, &link, &mut dice) {
            continue;
        }
        let up = {
            let mut map = peers.lock().await;
            match map.get(&client) {
                Some(s) => s.clone(),
                None => {
                    let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, 0)).await else {
                        continue;
                    };
                    let s = Arc::new(s);
                    let up = DelayLine::new(s.clone(), upstream, link.delay);
                    map.insert(client, up.clone());
                    let down = DelayLine::new(front.clone(), client, link.delay);
                    let counters = counters.clone();
                    tokio::spawn(async move {
                        let mut dice = Dice::new();
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, _)) = s.recv_from(&mut buf).await {
                            if passes(&counters, &link, &mut dice) {
                                down.send(&buf[..n]);
                            }
                        }
                    });
                    up
                }
            }
        };
        up.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dice_lose_about_the_share_asked_for() {
        let (c, link) = (
            Counters::default(),
            Impairment {
                delay: Duration::ZERO,
                loss: 0.01,
            },
        );
        let mut dice = Dice::new();
        for _ in 0..200_000 {
            passes(&c, &link, &mut dice);
        }
        let lost = c.lost.load(Ordering::SeqCst);
        assert!((1_600..2_400).contains(&lost), "lost {lost} of 200,000");
        assert_eq!(lost + c.relayed.load(Ordering::SeqCst), 200_000);
        c.cut.store(true, Ordering::SeqCst);
        assert!(!passes(&c, &link, &mut dice));
        assert_eq!(c.dropped.load(Ordering::SeqCst), 1);
    }
}
