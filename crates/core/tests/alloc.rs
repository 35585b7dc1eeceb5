//! The happy path allocates nothing: a counting global allocator watches a
//! first-try success.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use backstop_core::Policy;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_first_try_success_allocates_nothing() {
    let policy = Policy::api().with_attempt_timeout(None);
    let mut cx = Context::from_waker(Waker::noop());
    // Warm up anything lazily initialised by the test harness.
    let _ = std::pin::pin!(policy.retry(|_| async { Ok::<_, std::io::Error>(1) }).run())
        .as_mut()
        .poll(&mut cx);

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..1000 {
        let fut = policy
            .retry(|_| async { Ok::<_, std::io::Error>(7u64) })
            .run();
        match std::pin::pin!(fut).as_mut().poll(&mut cx) {
            Poll::Ready(Ok(7)) => {}
            _ => panic!("expected an immediate success"),
        }
    }
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst) - before, 0);
}
