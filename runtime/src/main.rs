//! The `berth` binary: parse runc's command line, run it, report errors as runc does.

use clap::Parser;

use berth_runtime::cli::{self, Cli};
use berth_runtime::logging::{self, Reporter};

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod early_seal;
#[cfg(target_env = "musl")]
mod musl_libseccomp;

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
        // Bad usage exits 1 as in runc; --help goes to stdout and exits 0.
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if cli.global.version {
        print!("{}", berth_runtime::version::text());
        return;
    }
    let reporter = Reporter::new(&cli.global);
    if let Err(e) = logging::init_debug(&cli.global) {
        reporter.error(&logging::one_line(&e));
        std::process::exit(1);
    }
    match berth_runtime::execute(cli, &reporter) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            reporter.error(&logging::one_line(&e));
            std::process::exit(1);
        }
    }
}
