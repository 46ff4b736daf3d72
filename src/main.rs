//! The `keyward` binary: parses arguments, sets up the process and logging, and hands over to
//! [`keyward::cli`].

use clap::Parser;

/// mimalloc instead of glibc's malloc: the server's threads (gRPC workers, the store's writer,
/// sled's I/O threads) allocate in one thread and free in another all the time, which glibc's
/// arenas handle slowly (a fifth of the CPU of a durable put; see docs/benchmarks.md). Secrets
/// are zeroized by their owners before they are freed, whatever the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keyward::cli::harden_process();
    let args = keyward::cli::Cli::parse();
    keyward::cli::init_tracing(args.log_format());
    keyward::cli::main(args)
}
