//! The `containerd-shim-berth-v2` binary: containerd starts it per container (or pod).

fn main() {
    std::process::exit(berth_shim::service::main());
}
