//! The `berth-cni` binary: the CNI plugin named by the file it runs as (`host-local`,
//! `loopback`, ...), so one binary linked under each name fills a CNI bin directory.

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    std::process::exit(berth_cni::run_as(&argv0));
}
