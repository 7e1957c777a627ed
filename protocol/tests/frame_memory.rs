//! A frame's announced length is not trusted with an allocation: 1,000 peers that each announce
//! a 64 KiB frame and send three bytes cost about what they sent. Counted by a global allocator
//! that tracks the bytes alive, so the figure does not depend on how the OS maps pages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use outpost_protocol::codec::{read_frame, FrameError};
use outpost_protocol::message::Up;
use tokio::io::AsyncWriteExt;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test(flavor = "current_thread")]
async fn an_announced_frame_is_not_allocated_before_it_arrives() {
    const PEERS: usize = 1000;
    const ANNOUNCED: u32 = 64 * 1024;
    let mut held = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..PEERS {
        let (mut peer, ours) = tokio::io::duplex(64);
        peer.write_all(&ANNOUNCED.to_be_bytes()).await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        held.push(peer);
        readers.push(ours);
    }
    let before = LIVE.load(Ordering::Relaxed);
    let mut tasks = Vec::new();
    for mut ours in readers {
        tasks.push(tokio::spawn(async move {
            read_frame::<_, Up>(&mut ours, 2 * ANNOUNCED as usize).await
        }));
    }
    // Let every reader take the announcement and its three bytes, and wait for more.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let grown = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    // Allocating what was announced would hold 64 MiB.
    assert!(grown < 24 * 1024 * 1024, "{} KiB held", grown / 1024);
    drop(held);
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(FrameError::Truncated)));
    }
}
