//! The `containerd-shim-berth-v2` binary: containerd starts it per container (or pod).

fn main() {
    containerd_shim::run::<berth_shim::service::BerthShim>("io.containerd.berth.v2", None);
}
