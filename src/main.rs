//! The `keyward` binary: parses arguments, sets up the process and logging, and hands over to
//! [`keyward::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    keyward::cli::harden_process();
    let args = keyward::cli::Cli::parse();
    keyward::cli::init_tracing(args.log_format());
    keyward::cli::main(args)
}
