//! The `berth` binary: parse runc's command line, run it, report errors as runc does.

use clap::Parser;

use berth_runtime::cli::{self, Cli};
use berth_runtime::logging::{self, Reporter};

fn main() {
    let cli = Cli::parse_from(cli::normalize_args(std::env::args_os()));
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
