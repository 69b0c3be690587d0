//! `make bench`: measures berth against its peers, section by section, and writes the
//! tables under target/bench/.

fn main() {
    // Started through one of the cri bench's wrapper links: be that wrapper.
    if let Some(code) = berth_tests::bench_cri_trace::wrapper_main() {
        std::process::exit(code);
    }
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let all = ["runtime", "shim", "image", "cni", "docker", "cri"];
    let chosen: Vec<&str> =
        if sections.is_empty() { all.to_vec() } else { sections.iter().map(|s| s.as_str()).collect() };
    for section in chosen {
        match section {
            "runtime" => berth_tests::bench_runtime::run(),
            "shim" => berth_tests::bench_shim::run(),
            "image" => berth_tests::bench_image::run(),
            "cni" => berth_tests::bench_cni::run(),
            "docker" => berth_tests::bench_docker::run(),
            "cri" => berth_tests::bench_cri::run(),
            other => {
                eprintln!("berth-bench: unknown section {other:?}; known: {}", all.join(", "));
                std::process::exit(2);
            }
        }
    }
}
