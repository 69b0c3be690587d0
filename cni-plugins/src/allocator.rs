//! The release build's memory allocator (under musl): dlmalloc behind a lock of its own.
//!
//! musl's own malloc hands memory back to the kernel as soon as a group of blocks empties
//! (a CNI call made ~30 mmap/munmap pairs, each munmap interrupting the other CPU while two
//! threads run); dlmalloc keeps what it took until the process ends. Its lock is a flag
//! taken with one atomic instruction and released with a plain store: musl's mutex costs
//! two atomic instructions per call, a fifth of an ADD of 1000 published ports, which
//! allocates some 25,000 times.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

use dlmalloc::Dlmalloc;

pub struct Allocator {
    taken: AtomicBool,
    heap: UnsafeCell<Dlmalloc>,
}

// SAFETY: the heap is only reached through `with`, by one thread at a time.
unsafe impl Sync for Allocator {}

impl Allocator {
    pub const fn new() -> Allocator {
        Allocator { taken: AtomicBool::new(false), heap: UnsafeCell::new(Dlmalloc::new()) }
    }

    fn with<T>(&self, work: impl FnOnce(&mut Dlmalloc) -> T) -> T {
        let mut tries = 0u32;
        while self.taken.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            tries += 1;
            // The holder may have lost its CPU: let it have one back rather than spin on.
            if tries % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: taking the flag gave this thread the heap alone until it is released.
        let done = work(unsafe { &mut *self.heap.get() });
        self.taken.store(false, Ordering::Release);
        done
    }
}

// SAFETY: dlmalloc returns blocks of the size and alignment asked for, or null.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as GlobalAlloc::alloc's caller promises.
        self.with(|heap| unsafe { heap.malloc(layout.size(), layout.align()) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as GlobalAlloc::alloc_zeroed's caller promises.
        self.with(|heap| unsafe { heap.calloc(layout.size(), layout.align()) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller promises.
        self.with(|heap| unsafe { heap.free(ptr, layout.size(), layout.align()) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller promises.
        self.with(|heap| unsafe { heap.realloc(ptr, layout.size(), layout.align(), new_size) })
    }
}
