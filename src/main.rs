//! The `keyward` binary: parses arguments, sets up the process and logging, and hands over to
//! [`keyward::cli`]. It also holds what the library cannot do without unsafe code: the choice of
//! allocator, and the call that hands freed memory back to the system ([`keyward::memory`]).
//!
//! The allocator is glibc's until the command turns out to serve the store (`server`, `dev`);
//! from then on new memory comes from mimalloc, which serves a put or a get on less CPU (measured
//! in docs/benchmarks.md, "mimalloc for the store, glibc for the plugin"). `kms serve` and the
//! client commands stay on glibc: the plugin runs on every control-plane node, and with mimalloc
//! it held 60.9 MiB under load instead of 14.9 MiB. Memory is freed by the allocator it came
//! from, whichever is current.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// The process's allocator (see the module's documentation).
#[global_allocator]
static ALLOCATOR: Switch = Switch;

/// Set once, before the store starts: new memory comes from mimalloc. Never cleared.
static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v3 of libmimalloc-sys 0.1.49, which
/// names no constant for it); a test checks that it is that option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before it returns it to the system, in milliseconds:
/// mimalloc v2's 10 instead of v3's 1000 (docs/benchmarks.md: a restart with 100,000 Secrets
/// peaks at 175 MiB instead of 259 MiB; puts unchanged within the spread).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

fn main() -> std::process::ExitCode {
    keyward::cli::harden_process();
    let args = keyward::cli::Cli::parse_args();
    if args.serves_store() {
        use_mimalloc();
    }
    keyward::cli::init_tracing(args.log_format());
    keyward::cli::main(args)
}

/// Makes mimalloc the source of new memory, with [`PURGE_DELAY_MS`], and installs its release
/// call for [`keyward::memory`].
#[allow(unsafe_code)]
fn use_mimalloc() {
    // SAFETY: `mi_option_set` takes an option number and a value, no pointer; mimalloc allows
    // options to be set at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    keyward::memory::set_release(release_freed_memory);
    MIMALLOC.store(true, Ordering::Release);
}

/// mimalloc's `mi_collect(true)`: frees what the threads' heaps hold free and returns unused
/// pages to the system (see [`keyward::memory`]). mimalloc gives no count of what it returned.
#[allow(unsafe_code)]
fn release_freed_memory() -> bool {
    // SAFETY: `mi_collect` takes no pointer; mimalloc allows it from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
    true
}

/// glibc's allocator, then mimalloc's once [`MIMALLOC`] is set; a block goes back to the
/// allocator that made it (mimalloc knows its own: `mi_is_in_heap_region`, a page-map lookup).
struct Switch;

impl Switch {
    /// Whether mimalloc makes new blocks.
    fn mimalloc() -> bool {
        MIMALLOC.load(Ordering::Acquire)
    }

    /// Whether `ptr` came from mimalloc. Before the switch nothing did.
    #[allow(unsafe_code)]
    fn from_mimalloc(ptr: *mut u8) -> bool {
        // SAFETY: `mi_is_in_heap_region` only looks the address up in mimalloc's page map; any
        // address may be asked about.
        Self::mimalloc() && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
    }
}

#[allow(unsafe_code)]
// Not inlined (`inline(never)` below): inlined into every allocation site, the choice made the
// program's code 1 MB larger.
// SAFETY: every block is made by one of two sound allocators and freed or resized by the one
// that made it (`from_mimalloc`); a block that changes allocator in `realloc` is copied into a
// new block of the current one and freed by its own.
unsafe impl GlobalAlloc for Switch {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if Self::mimalloc() {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if Self::mimalloc() {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was made by `layout` in the allocator `from_mimalloc` names.
        unsafe {
            if Self::from_mimalloc(ptr) {
                MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let from_mimalloc = Self::from_mimalloc(ptr);
        // SAFETY: resized by the allocator that made it while that one is current; otherwise
        // copied into a block of the current one (`new_size` is valid for `layout`'s alignment,
        // the caller's contract) and freed by its own.
        unsafe {
            match (from_mimalloc, Self::mimalloc()) {
                (true, true) => MiMalloc.realloc(ptr, layout, new_size),
                (false, false) => System.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn blocks_go_back_to_the_allocator_that_made_them_and_the_purge_delay_is_set() {
        // Made by glibc's allocator, before the switch.
        let before: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let mut grown = vec![7u8; 1000];
        // SAFETY: `mi_option_get` takes an option number, no pointer.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "mimalloc v3's purge delay is 1000 ms by default"
        );
        use_mimalloc();
        // SAFETY: as above.
        let set = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(set, PURGE_DELAY_MS);
        // Blocks made before the switch are freed by glibc's allocator, or moved when they grow.
        let after: Vec<u8> = vec![9; 5000];
        assert!(Switch::from_mimalloc(after.as_ptr().cast_mut()));
        assert!(!Switch::from_mimalloc(grown.as_ptr().cast_mut()));
        grown.resize(1 << 20, 8);
        assert!(Switch::from_mimalloc(grown.as_ptr().cast_mut()));
        assert!(grown[..1000].iter().all(|&b| b == 7) && grown[1000..].iter().all(|&b| b == 8));
        for (i, v) in before.iter().enumerate() {
            assert!(v.iter().all(|&b| usize::from(b) == i) && v.len() == 100 + i);
        }
        drop(before);
        drop(after);
    }
}
