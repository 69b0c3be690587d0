//! `make bench` cri section: what a kubelet waits for to start a pod through containerd's
//! CRI plugin (RunPodSandbox, CreateContainer, StartContainer, until ContainerStatus says
//! RUNNING), on berth's stack (berth's shim, berth, berth-cni) against the reference
//! (containerd's Go runc shim, Debian's runc, the reference plugins), each on a private
//! containerd 1.6 of its own with the same images and network shape; one pod at a time and
//! 20 at once, alternated; then, in a separate traced pass, where one pod start's time goes
//! (shim, runtime, plugins, and containerd's own CRI work). Runs in a private network and
//! mount namespace (the bench re-runs itself under `unshare -n -m`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use crate::bench::{alternate, median, ms, ratio, time, Contestant, Table};
use crate::bench_cri_trace::{covered, monotonic_ns, Part, Tracer, Window};
use crate::bins::bin;
use crate::cri_node::{CriNode, Executables, Stack, DEBIAN_RUNC, REFERENCE_CNI_DIR};
use crate::oci_image::{LayerDir, OciArchive};
use crate::plugin_dir::CHAIN_PLUGINS;

const ROUNDS: usize = 20;
const PARALLEL: usize = 20;
const PARALLEL_ROUNDS: usize = 5;
/// Pods per stack in the traced pass.
const TRACED_ROUNDS: usize = 10;
/// Which part of the bench this process is: unset (outside), the namespace's supervisor,
/// or the bench itself.
const STAGE: &str = "BERTH_BENCH_CRI_STAGE";
const DIR: &str = "BERTH_BENCH_CRI_DIR";
const IMAGE: &str = "berth.test/bench-sleep:1";
const GO_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

pub fn run() {
    match std::env::var(STAGE).as_deref() {
        Err(_) => outside(),
        Ok("namespace") => crate::bench::supervise_in_private_namespaces("cri", STAGE),
        Ok("bench") => bench(&PathBuf::from(std::env::var_os(DIR).expect("the cri bench's directory is not set"))),
        Ok(other) => panic!("{STAGE}={other:?} is not a stage of the cri bench"),
    }
}

/// Outside: a private directory and a cgroup parent for the pods, the namespace's run, and
/// the removal of both afterwards, also when the bench failed.
fn outside() {
    for program in ["containerd", "ctr", "unshare", "ip"] {
        assert!(crate::privilege::have_program(program), "{program} is missing; `make deps` installs it");
    }
    for path in [GO_SHIM, DEBIAN_RUNC] {
        assert!(Path::new(path).exists(), "{path} is missing; `make deps` installs containerd and runc");
    }
    for plugin in CHAIN_PLUGINS {
        assert!(
            Path::new(REFERENCE_CNI_DIR).join(plugin).exists(),
            "the reference plugins are missing; `make deps` installs containernetworking-plugins"
        );
    }
    // Short: containerd's socket paths are limited.
    crate::bench::run_in_private_namespaces("cri", STAGE, DIR, "bcri");
}

fn label(stack: Stack) -> &'static str {
    match stack {
        Stack::Berth => "berth",
        Stack::Reference => "reference",
    }
}

/// The container's image: busybox and two small layers, as a registry would hold it.
fn image() -> OciArchive {
    OciArchive::build(
        IMAGE,
        &[
            LayerDir::busybox(),
            LayerDir::new().file("etc/bench/one", "one\n"),
            LayerDir::new().file("etc/bench/two", "two\n"),
        ],
        &["sleep", "3600"],
    )
}

/// A node of `stack` in `dir/NAME` with the bench's image.
fn node(dir: &Path, name: &str, stack: Stack, executables: impl FnOnce(&Path) -> Executables) -> CriNode {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let node = CriNode::start_stack(&dir, stack, executables(&dir));
    node.containerd.import(&image());
    node
}

/// RunPodSandbox, CreateContainer, StartContainer, then ContainerStatus until RUNNING, as a
/// kubelet starts a pod; the pod's id.
async fn start_pod(
    mut runtime: RuntimeServiceClient<Channel>,
    pod: PodSandboxConfig,
    container: ContainerConfig,
) -> anyhow::Result<String> {
    let request = RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() };
    let pod_id = runtime.run_pod_sandbox(request).await?.into_inner().pod_sandbox_id;
    let request =
        CreateContainerRequest { pod_sandbox_id: pod_id.clone(), config: Some(container), sandbox_config: Some(pod) };
    let container_id = runtime.create_container(request).await?.into_inner().container_id;
    runtime.start_container(StartContainerRequest { container_id: container_id.clone() }).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = ContainerStatusRequest { container_id: container_id.clone(), verbose: false };
        let status = runtime.container_status(request).await?.into_inner().status;
        if status.is_some_and(|s| s.state == ContainerState::ContainerRunning as i32) {
            return Ok(pod_id);
        }
        anyhow::ensure!(Instant::now() < deadline, "container {container_id} of pod {pod_id} never ran");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// StopPodSandbox and RemovePodSandbox (which removes its container).
async fn remove_pod(mut runtime: RuntimeServiceClient<Channel>, pod_id: String) -> anyhow::Result<()> {
    runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await?;
    runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await?;
    Ok(())
}

/// Starts pods `names` at once on `node`; the time until all run, and their ids.
fn start_pods(node: &CriNode, names: &[String]) -> (Duration, Vec<String>) {
    let configs: Vec<_> = names
        .iter()
        .map(|name| (node.pod_config(name, vec![]), node.container_config("sleep", IMAGE, &["sleep", "3600"])))
        .collect();
    let started = Instant::now();
    let calls: Vec<_> = configs
        .into_iter()
        .map(|(pod, container)| node.cri.spawn(start_pod(node.cri.runtime.clone(), pod, container)))
        .collect();
    let ids = node.cri.block_on(async {
        let mut ids = Vec::new();
        for call in calls {
            ids.push(call.await.expect("a pod start panicked"));
        }
        ids
    });
    let took = started.elapsed();
    let ids: Vec<String> = ids
        .into_iter()
        .map(|id| id.unwrap_or_else(|e| panic!("{} pod start failed: {e:#}", label(node.stack))))
        .collect();
    (took, ids)
}

/// Removes pods `ids` at once; the time it took.
fn remove_pods(node: &CriNode, ids: Vec<String>) -> Duration {
    time(|| {
        let calls: Vec<_> =
            ids.into_iter().map(|id| node.cri.spawn(remove_pod(node.cri.runtime.clone(), id))).collect();
        node.cri.block_on(async {
            for call in calls {
                call.await.expect("a pod removal panicked").unwrap_or_else(|e| panic!("pod removal failed: {e:#}"));
            }
        })
    })
}

fn bench(dir: &Path) {
    let mut table = Table::new(
        &format!("cri: pods through containerd 1.6's CRI plugin, berth's shim + berth + berth-cni vs containerd's Go runc shim + runc 1.1.5 + the reference plugins 1.1.1 (median of {ROUNDS}, alternated)"),
        &["operation", "berth", "reference", "berth/reference"],
    );
    {
        let nodes = [
            node(dir, "berth", Stack::Berth, |d| Stack::Berth.executables(d)),
            node(dir, "reference", Stack::Reference, |d| Stack::Reference.executables(d)),
        ];
        let mut teardown: [Vec<Duration>; 2] = Default::default();
        let medians = {
            let mut contestants: Vec<Contestant> = nodes
                .iter()
                .zip(teardown.iter_mut())
                .map(|(node, teardown)| {
                    let mut n = 0;
                    Contestant {
                        label: label(node.stack).into(),
                        run: Box::new(move || {
                            n += 1;
                            let (took, ids) = start_pods(node, &[format!("one-{n}")]);
                            teardown.push(remove_pods(node, ids));
                            took
                        }),
                    }
                })
                .collect();
            alternate(&mut contestants, ROUNDS)
        };
        table.row(vec![
            "one pod: RunPodSandbox + CreateContainer + StartContainer until RUNNING (goal <= 0.5x)".into(),
            ms(medians[0]),
            ms(medians[1]),
            ratio(medians[0], medians[1]),
        ]);
        let mut all: [Vec<Duration>; 2] = Default::default();
        let mut all_teardown: [Vec<Duration>; 2] = Default::default();
        for round in 0..PARALLEL_ROUNDS {
            for (i, node) in nodes.iter().enumerate() {
                let names: Vec<String> = (0..PARALLEL).map(|n| format!("par-{round}-{n}")).collect();
                let (took, ids) = start_pods(node, &names);
                all[i].push(took);
                all_teardown[i].push(remove_pods(node, ids));
            }
        }
        let [berth, reference] = all.map(|mut a| median(&mut a));
        table.row(vec![
            format!("{PARALLEL} pods started at once, until all run (goal <= 0.5x; median of {PARALLEL_ROUNDS})"),
            ms(berth),
            ms(reference),
            ratio(berth, reference),
        ]);
        let [berth, reference] = teardown.map(|mut t| median(&mut t));
        table.row(vec![
            "teardown, not in the times above: StopPodSandbox + RemovePodSandbox of one pod".into(),
            ms(berth),
            ms(reference),
            ratio(berth, reference),
        ]);
        let [berth, reference] = all_teardown.map(|mut t| median(&mut t));
        table.row(vec![
            format!("teardown of {PARALLEL} pods at once"),
            ms(berth),
            ms(reference),
            ratio(berth, reference),
        ]);
    }
    table.publish("cri");
    shares(dir);
}

/// The traced pass: each stack's node again, its shim binary, runtime and plugins behind
/// wrappers that log each call and its serving shims behind a ttrpc proxy that logs each
/// task-API call; then one pod at a time, alternated, and each pod's time split into the
/// parts.
fn shares(dir: &Path) {
    let berth_tracer = Tracer::start(Path::new("/run/bcri-trace-berth"));
    let reference_tracer = Tracer::start(Path::new("/run/bcri-trace-ref"));
    let nodes = [
        node(dir, "traced-berth", Stack::Berth, |d| traced_berth(&berth_tracer, d)),
        node(dir, "traced-reference", Stack::Reference, |d| traced_reference(&reference_tracer, d)),
    ];
    let tracers = [&berth_tracer, &reference_tracer];
    let wrapper_cost = berth_tracer.wrapper_cost();
    // Per stack, per pod: its span (start, end).
    let mut spans: [Vec<(u64, u64)>; 2] = Default::default();
    for round in 0..=TRACED_ROUNDS {
        for (i, node) in nodes.iter().enumerate() {
            let start = monotonic_ns();
            let (_, ids) = start_pods(node, &[format!("traced-{round}")]);
            let end = monotonic_ns();
            remove_pods(node, ids);
            // The first round warms each node up, as `alternate` does.
            if round > 0 {
                spans[i].push((start, end));
            }
        }
    }
    let mut table = Table::new(
        &format!("cri: where one pod start goes, traced (median of {TRACED_ROUNDS}, alternated; wrappers and a ttrpc proxy add their own time to the rest)"),
        &["part", "berth", "of berth's", "reference", "of reference's"],
    );
    let parts: Vec<Vec<Parts>> =
        spans.iter().zip(tracers).map(|(spans, tracer)| split(spans, &tracer.calls())).collect();
    let rows: [(&str, PartOf); 5] = [
        ("one pod start, traced", |p| p.total),
        ("shim: its `start` processes and task-API calls, less the runtime's calls in them", |p| p.shim),
        ("runtime: berth / runc processes", |p| p.runtime),
        ("CNI plugins: the chain and loopback", |p| p.plugins),
        ("the rest: containerd's CRI work, the CRI client, the tracing", |p| p.rest),
    ];
    let totals: Vec<u64> = parts.iter().map(|p| median_ns(p.iter().map(|p| p.total).collect())).collect();
    for (name, part) in rows {
        let mut row = vec![name.to_string()];
        for (stack, total) in parts.iter().zip(&totals) {
            let value = median_ns(stack.iter().map(part).collect());
            row.push(format!("{:.2} ms", value as f64 / 1e6));
            row.push(format!("{:.0}%", 100.0 * value as f64 / *total as f64));
        }
        table.row(row);
    }
    let wrapped: Vec<u64> = spans
        .iter()
        .zip(tracers)
        .map(|(spans, tracer)| {
            let calls = tracer.calls();
            median_ns(
                spans
                    .iter()
                    .map(|span| calls.iter().filter(|w| is_wrapped(w) && within(w, *span)).count() as u64)
                    .collect(),
            )
        })
        .collect();
    table.row(vec![
        format!(
            "of the rest and the shim: tracing, a wrapper's own start per wrapped call ({} calls per berth pod, {} per reference pod)",
            wrapped[0], wrapped[1]
        ),
        ms(wrapper_cost),
        String::new(),
        ms(wrapper_cost),
        String::new(),
    ]);
    table.publish("cri-shares");
    let mut calls = Table::new(
        "cri: the traced calls of one pod start (median per pod of each call's total time)",
        &["call", "berth", "reference"],
    );
    for (part, what) in call_kinds(&spans, &tracers) {
        let mut row = vec![format!("{} {what}", part_label(part))];
        for (spans, tracer) in spans.iter().zip(tracers) {
            let windows = tracer.calls();
            let per_pod: Vec<u64> = spans
                .iter()
                .map(|span| {
                    let inside = windows.iter().filter(|w| w.part == part && w.what == what).map(|w| clip(w, *span));
                    inside.map(|(start, end)| end - start).sum()
                })
                .collect();
            let seen = per_pod.iter().any(|t| *t > 0);
            row.push(if seen { format!("{:.2} ms", median_ns(per_pod) as f64 / 1e6) } else { String::new() });
        }
        calls.row(row);
    }
    calls.publish("cri-calls");
    for ((spans, tracer), stack) in spans.iter().zip(tracers).zip([Stack::Berth, Stack::Reference]) {
        timeline(stack, *spans.last().expect("no traced pod"), &tracer.calls());
    }
}

/// The calls of one traced pod start in the order they began, from the pod's first CRI call.
fn timeline(stack: Stack, span: (u64, u64), calls: &[Window]) {
    let mut table = Table::new(
        &format!("cri: the last traced pod start on the {} stack, call by call", label(stack)),
        &["from the pod's start", "took", "part", "call"],
    );
    let mut inside: Vec<&Window> = calls.iter().filter(|w| w.what != "Wait" && overlaps(w, span)).collect();
    inside.sort_by_key(|w| w.start);
    let millis = |ns: u64| format!("{:.2} ms", ns as f64 / 1e6);
    for w in inside {
        table.row(vec![
            millis(w.start.saturating_sub(span.0)),
            millis(w.end - w.start),
            part_label(w.part).into(),
            w.what.clone(),
        ]);
    }
    table.row(vec![millis(span.1 - span.0), String::new(), String::new(), "the container runs".into()]);
    table.publish(&format!("cri-timeline-{}", label(stack)));
}

/// A call a wrapper made (a process), not one the proxy saw.
fn is_wrapped(w: &Window) -> bool {
    w.part != Part::Shim || w.what == "start"
}

fn within(w: &Window, (start, end): (u64, u64)) -> bool {
    w.start >= start && w.end <= end
}

fn part_label(part: Part) -> &'static str {
    match part {
        Part::Shim => "shim",
        Part::Runtime => "runtime",
        Part::Plugin => "plugin",
    }
}

/// Every (part, call) seen inside a pod's span, shims first, in the order first seen.
fn call_kinds(spans: &[Vec<(u64, u64)>; 2], tracers: &[&Tracer; 2]) -> Vec<(Part, String)> {
    let mut kinds: Vec<(Part, String, u64)> = Vec::new();
    for (spans, tracer) in spans.iter().zip(tracers) {
        for w in tracer.calls() {
            if w.what == "Wait" || !spans.iter().any(|span| overlaps(&w, *span)) {
                continue;
            }
            if !kinds.iter().any(|(p, what, _)| *p == w.part && *what == w.what) {
                kinds.push((w.part, w.what.clone(), w.start));
            }
        }
    }
    kinds.sort_by_key(|(part, _, first)| (*part as u8, *first));
    kinds.into_iter().map(|(part, what, _)| (part, what)).collect()
}

/// Which of a pod start's parts a row shows.
type PartOf = fn(&Parts) -> u64;

/// One pod start's time split into parts, nanoseconds.
struct Parts {
    total: u64,
    shim: u64,
    runtime: u64,
    plugins: u64,
    rest: u64,
}

/// Each span's parts: plugins are the time any plugin ran; the runtime the time a runtime
/// ran and no plugin; the shim the time a shim's `start` ran or a task-API call was
/// answered (`Wait` answers only at the container's exit) and neither of those; the rest
/// is the span's remainder.
fn split(spans: &[(u64, u64)], calls: &[Window]) -> Vec<Parts> {
    spans
        .iter()
        .map(|span| {
            let of = |parts: &[Part]| -> Vec<(u64, u64)> {
                calls
                    .iter()
                    .filter(|w| parts.contains(&w.part) && w.what != "Wait")
                    .map(|w| clip(w, *span))
                    .filter(|(start, end)| end > start)
                    .collect()
            };
            let plugins = covered(of(&[Part::Plugin]));
            let with_runtime = covered(of(&[Part::Plugin, Part::Runtime]));
            let with_shim = covered(of(&[Part::Plugin, Part::Runtime, Part::Shim]));
            let total = span.1 - span.0;
            Parts {
                total,
                shim: with_shim - with_runtime,
                runtime: with_runtime - plugins,
                plugins,
                rest: total - with_shim,
            }
        })
        .collect()
}

fn overlaps(w: &Window, span: (u64, u64)) -> bool {
    let (start, end) = clip(w, span);
    end > start
}

fn clip(w: &Window, (start, end): (u64, u64)) -> (u64, u64) {
    (w.start.clamp(start, end), w.end.clamp(start, end))
}

fn median_ns(values: Vec<u64>) -> u64 {
    let mut durations: Vec<Duration> = values.into_iter().map(Duration::from_nanos).collect();
    median(&mut durations).as_nanos() as u64
}

/// berth's stack behind wrappers: containerd finds a wrapper as berth's shim; the real shim
/// runs from a copy beside a wrapper of berth (berth's shim runs the berth beside it); the
/// CNI directory holds a wrapper per plugin of berth's lib/cni.
fn traced_berth(tracer: &Tracer, dir: &Path) -> Executables {
    let installed = Stack::Berth.executables(dir);
    let shim_copy = tracer.dir().join("shim");
    std::fs::create_dir_all(&shim_copy).unwrap();
    let real_shim = shim_copy.join("containerd-shim-berth-v2");
    std::fs::copy(bin("containerd-shim-berth-v2"), &real_shim).expect("cannot copy berth's shim");
    tracer.wrap(Part::Runtime, &shim_copy, "berth", &bin("berth"));
    let wrappers = tracer.dir().join("bin");
    tracer.wrap(Part::Shim, &wrappers, "containerd-shim-berth-v2", &real_shim);
    let cni_bin = tracer.dir().join("cni");
    for plugin in CHAIN_PLUGINS {
        tracer.wrap(Part::Plugin, &cni_bin, plugin, &installed.cni_bin.join(plugin));
    }
    Executables { shim_dir: Some(wrappers), runtime: shim_copy.join("berth"), cni_bin }
}

/// The reference stack behind wrappers: containerd finds a wrapper as the runc shim, which
/// runs a wrapper of runc (its BinaryName); a wrapper per reference plugin.
fn traced_reference(tracer: &Tracer, dir: &Path) -> Executables {
    let installed = Stack::Reference.executables(dir);
    let wrappers = tracer.dir().join("bin");
    tracer.wrap(Part::Shim, &wrappers, "containerd-shim-runc-v2", Path::new(GO_SHIM));
    tracer.wrap(Part::Runtime, &wrappers, "runc", &installed.runtime);
    let cni_bin = tracer.dir().join("cni");
    for plugin in CHAIN_PLUGINS {
        tracer.wrap(Part::Plugin, &cni_bin, plugin, &installed.cni_bin.join(plugin));
    }
    Executables { shim_dir: Some(wrappers.clone()), runtime: wrappers.join("runc"), cni_bin }
}
