//! The controller's QUIC sockets: sends go out at most [`MAX_SEGMENTS`] datagrams a system
//! call, which bounds what every connection keeps for sending. An endpoint rebound later must
//! be given a [`SegmentCapped`] socket again (`rebind_abstract`), or it loses the cap.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

/// Datagrams one send may carry (segmentation offload), where the kernel allows as many.
///
/// The first time a connection sends more than one datagram at once (the handshake's flight,
/// with its certificate chain, does), quinn reserves its send buffer for that many more, and
/// keeps it for the connection's life. At quinn's own cap of 10 that was 13.2 kB allocated
/// for every idle agent's session. With no offload, a revision's bytes go out a datagram a
/// system call, and 19 agents fetching 50 MiB each took 14.3–14.8 s where they took
/// 11.7–12.1 s. Four took 12.1–12.9 s, for a buffer of about 6 kB (BENCHMARKS.md, "50,000 idle
/// agents, again").
pub const MAX_SEGMENTS: usize = 4;

/// A socket whose sends carry at most [`MAX_SEGMENTS`] datagrams; everything else is the
/// runtime's own socket.
#[derive(Debug)]
pub struct SegmentCapped {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl SegmentCapped {
    /// Wraps a bound socket for quinn, on tokio.
    pub fn wrap(socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(SegmentCapped { inner }))
    }
}

impl AsyncUdpSocket for SegmentCapped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(MAX_SEGMENTS)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_are_capped_and_everything_else_is_passed_through() {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let plain = quinn::TokioRuntime.wrap_udp_socket(bind()).unwrap();
        let capped = SegmentCapped::wrap(bind()).unwrap();
        assert!(capped.max_transmit_segments() <= MAX_SEGMENTS);
        assert_eq!(
            capped.max_transmit_segments(),
            plain.max_transmit_segments().min(MAX_SEGMENTS)
        );
        if plain.max_transmit_segments() > MAX_SEGMENTS {
            assert_eq!(capped.max_transmit_segments(), MAX_SEGMENTS);
        }
        assert_eq!(capped.max_receive_segments(), plain.max_receive_segments());
        assert_eq!(capped.may_fragment(), plain.may_fragment());
    }
}
