//! The `keyward` binary: parses arguments, sets up the process and logging, and hands over to
//! [`keyward::cli`]. It also gives the library the one call it cannot make without unsafe code:
//! glibc's `malloc_trim`, for [`keyward::memory`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    keyward::cli::harden_process();
    keyward::memory::set_release(release_freed_memory);
    let args = keyward::cli::Cli::parse();
    keyward::cli::init_tracing(args.log_format());
    keyward::cli::main(args)
}

/// glibc's `malloc_trim(0)`: returns the free pages of every arena to the system (see
/// [`keyward::memory`]); whether any were returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and glibc locks each arena while it trims it, so
    // it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return freed memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() -> bool {
    false
}
