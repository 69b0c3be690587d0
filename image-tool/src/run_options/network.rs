//! Docker's network options of `unpack` turned into the bundle: `--network bridge|host|none|
//! container:NAME|NETWORK`, `-p`/`-P`, `--alias` and `--link`. Bridge and named networks keep
//! a new network namespace and get berth-cni's OCI hooks (createRuntime `hook add`, poststop
//! `hook del`), which attach the container, publish its ports and keep its hosts file's block;
//! berth-cni's directories are passed through. `host` drops the network namespace, `none`
//! keeps it empty (the runtime brings up its loopback), `container:NAME` joins the namespace
//! the running container NAME's hook pinned and shares that bundle's hosts, hostname and
//! resolv.conf.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::{
    Hook, HookBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Spec,
};

/// berth-cni's default network, which Docker's `bridge` means.
pub const DEFAULT_NETWORK: &str = "berth";

#[derive(Args, Debug, Clone, Default)]
pub struct NetworkOptions {
    /// bridge (berth-cni's default network `berth`), host, none, container:NAME (a running
    /// container's network), or a network made by `berth-cni network create`
    #[arg(long, value_name = "NETWORK", default_value = "bridge", help_heading = "Network")]
    pub network: String,
    /// Publish a container port: [IP:][HOST:]CTR[/udp|/tcp|/sctp], ranges (8000-8010:80-90),
    /// or CTR alone for a free host port
    #[arg(short = 'p', long = "publish", value_name = "SPEC", help_heading = "Network")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port
    #[arg(short = 'P', long, help_heading = "Network")]
    pub publish_all: bool,
    /// Another name the network's other members resolve this container by
    #[arg(long = "alias", visible_alias = "network-alias", value_name = "NAME", help_heading = "Network")]
    pub aliases: Vec<String>,
    /// Add NAME (a running container on the same network) to this container's hosts file as
    /// NAME and ALIAS (Docker's legacy link environment variables are not set)
    #[arg(long = "link", value_name = "NAME[:ALIAS]", help_heading = "Network")]
    pub links: Vec<String>,
    /// berth-cni's --conf-dir, for the hooks (default: berth-cni's own)
    #[arg(long, value_name = "DIR", help_heading = "Network")]
    pub cni_conf_dir: Option<PathBuf>,
    /// berth-cni's --bin-dir, for the hooks (default: berth-cni's own)
    #[arg(long, value_name = "DIR", help_heading = "Network")]
    pub cni_bin_dir: Option<PathBuf>,
    /// berth-cni's --state-dir, for the hooks (default: berth-cni's own)
    #[arg(long, value_name = "DIR", help_heading = "Network")]
    pub cni_state_dir: Option<PathBuf>,
    /// The berth-cni the hooks run (default: the one installed beside berth-image, else on PATH)
    #[arg(long, value_name = "PATH", help_heading = "Network")]
    pub berth_cni: Option<PathBuf>,
}

/// What `--network` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Attached to a berth-cni network through the hooks.
    Attached(String),
    Host,
    None,
    /// Sharing the network namespace of the running container of that name.
    Container(String),
}

/// What the rest of unpack needs from the network options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NetworkPlan {
    /// `container:NAME`: the target's bundle, whose hosts, hostname and resolv.conf are shared.
    pub shared_from: Option<PathBuf>,
    /// `--link` lines for the hosts file: an address and its names.
    pub link_hosts: Vec<(String, Vec<String>)>,
    /// `host`: the host's hostname, the container's unless `--hostname` says otherwise.
    pub hostname: Option<String>,
}

impl NetworkOptions {
    pub fn mode(&self) -> Result<NetworkMode> {
        Ok(match self.network.as_str() {
            "" | "bridge" | "default" => NetworkMode::Attached(DEFAULT_NETWORK.into()),
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => match other.strip_prefix("container:") {
                Some("") => bail!("--network container: needs a container name (container:NAME)"),
                Some(name) => NetworkMode::Container(name.to_string()),
                None => NetworkMode::Attached(other.to_string()),
            },
        })
    }

    /// Sets the bundle's network namespace and hooks; `name` is the container's name on
    /// networks, `bundle` the bundle directory (holding its hosts file).
    pub fn apply(&self, spec: &mut Spec, bundle: &Path, name: &str) -> Result<NetworkPlan> {
        let mode = self.mode()?;
        if !matches!(mode, NetworkMode::Attached(_)) {
            for (given, option) in [
                (!self.publish.is_empty() || self.publish_all, "-p/--publish and -P"),
                (!self.aliases.is_empty(), "--alias"),
                (!self.links.is_empty(), "--link"),
            ] {
                if given {
                    bail!("{option} need a bridge or named network; --network {} has none of its own", self.network);
                }
            }
        }
        match mode {
            NetworkMode::Attached(network) => {
                let published = self
                    .publish
                    .iter()
                    .map(|p| berth_cni::network::publish::PublishSpec::parse(p))
                    .collect::<Result<Vec<_>>>()?;
                let berth_cni = self.berth_cni()?;
                self.refuse_a_name_in_use(&berth_cni, name)?;
                let mut add = vec!["hook".to_string(), "add".into(), network.clone(), "--name".into(), name.into()];
                add.extend(["--hosts-file".into(), bundle.join("hosts").display().to_string()]);
                for spec in self.publish.iter().cloned().chain(self.exposed_ports(spec, &published)) {
                    add.extend(["--publish".into(), spec]);
                }
                for alias in &self.aliases {
                    add.extend(["--alias".into(), alias.clone()]);
                }
                let del = vec!["hook".to_string(), "del".into(), network.clone()];
                add_hooks(spec, self.hook(&berth_cni, add)?, self.hook(&berth_cni, del)?)?;
                let link_hosts = if self.links.is_empty() {
                    Vec::new()
                } else {
                    let members = self.inspect(&berth_cni, &["network", "inspect", &network])?;
                    self.links.iter().map(|link| link_line(&members, &network, link)).collect::<Result<_>>()?
                };
                Ok(NetworkPlan { link_hosts, ..NetworkPlan::default() })
            }
            NetworkMode::Host => {
                set_network_namespace(spec, None)?;
                let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string());
                Ok(NetworkPlan { hostname, ..NetworkPlan::default() })
            }
            NetworkMode::None => Ok(NetworkPlan::default()),
            NetworkMode::Container(target) => {
                let pinned = self.inspect(&self.berth_cni()?, &["container", "inspect", &target])?;
                let netns = pinned["netns"].as_str().context("berth-cni's container inspect gave no netns")?;
                let target_bundle =
                    pinned["bundle"].as_str().filter(|b| Path::new(b).is_absolute()).map(PathBuf::from).with_context(
                        || format!("berth-cni pinned {target} without its bundle; it cannot be shared"),
                    )?;
                set_network_namespace(spec, Some(Path::new(netns)))?;
                share_files(spec, &target_bundle)?;
                Ok(NetworkPlan { shared_from: Some(target_bundle), ..NetworkPlan::default() })
            }
        }
    }

    /// `-P`: every port the image exposes (the exposedPorts annotation) that `-p` does not
    /// publish already, on a free host port.
    fn exposed_ports(&self, spec: &Spec, published: &[berth_cni::network::publish::PublishSpec]) -> Vec<String> {
        if !self.publish_all {
            return Vec::new();
        }
        let explicit: Vec<(u16, String)> = published
            .iter()
            .flat_map(|p| (p.container_ports.0..=p.container_ports.1).map(move |port| (port, p.protocol.clone())))
            .collect();
        let annotation =
            spec.annotations().as_ref().and_then(|a| a.get("org.opencontainers.image.exposedPorts").cloned());
        annotation
            .unwrap_or_default()
            .split(',')
            .filter(|exposed| {
                let (port, protocol) = exposed.split_once('/').unwrap_or((exposed, "tcp"));
                !exposed.is_empty() && !explicit.iter().any(|(p, proto)| port == p.to_string() && protocol == proto)
            })
            .map(String::from)
            .collect()
    }

    /// The berth-cni hooks run: given, beside this program (`make install` puts both in
    /// bin/), or on PATH; absolute, as hooks need.
    fn berth_cni(&self) -> Result<PathBuf> {
        if let Some(path) = &self.berth_cni {
            return std::path::absolute(path).with_context(|| format!("bad --berth-cni {}", path.display()));
        }
        let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("berth-cni")));
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("berth-cni")).collect::<Vec<_>>())
            .unwrap_or_default();
        beside.into_iter().chain(on_path).find(|candidate| candidate.is_file()).context(
            "berth-cni is not installed beside berth-image nor on PATH: install it (make install) or pass --berth-cni",
        )
    }

    /// berth-cni's directory flags, as given.
    fn dir_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for (flag, value) in
            [("--conf-dir", &self.cni_conf_dir), ("--bin-dir", &self.cni_bin_dir), ("--state-dir", &self.cni_state_dir)]
        {
            if let Some(dir) = value {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                flags.extend([flag.to_string(), dir.display().to_string()]);
            }
        }
        flags
    }

    fn hook(&self, berth_cni: &Path, args: Vec<String>) -> Result<Hook> {
        let mut full = vec!["berth-cni".to_string()];
        full.extend(args);
        full.extend(self.dir_flags());
        HookBuilder::default().path(berth_cni).args(full).build().context("cannot build a berth-cni hook")
    }

    /// Runs `berth-cni ARGS` and parses the JSON it prints; its error otherwise.
    fn inspect(&self, berth_cni: &Path, args: &[&str]) -> Result<serde_json::Value> {
        let out = Command::new(berth_cni)
            .args(args)
            .args(self.dir_flags())
            .output()
            .with_context(|| format!("cannot run {}", berth_cni.display()))?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("berth-cni: "));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("berth-cni {} printed no JSON", args.join(" ")))
    }

    /// A name a running container holds on berth-cni's networks is refused here, as Docker
    /// refuses `--name` twice (berth-cni's hook would refuse it at create otherwise).
    fn refuse_a_name_in_use(&self, berth_cni: &Path, name: &str) -> Result<()> {
        let out = Command::new(berth_cni)
            .args(["container", "inspect", name])
            .args(self.dir_flags())
            .output()
            .with_context(|| format!("cannot run {}", berth_cni.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("no running container is named") {
                return Ok(());
            }
            bail!("cannot ask berth-cni whether the name {name:?} is taken: {}", stderr.trim());
        }
        let holder: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        bail!(
            "the name {name:?} is already used by the running container {} (bundle {}); give another --name",
            holder["id"].as_str().unwrap_or("?"),
            holder["bundle"].as_str().unwrap_or("?")
        )
    }
}

/// `--link NAME[:ALIAS]`: NAME's address among the `network inspect` output `members`,
/// named ALIAS and NAME.
fn link_line(members: &serde_json::Value, network: &str, link: &str) -> Result<(String, Vec<String>)> {
    let (target, alias) = link.split_once(':').unwrap_or((link, link));
    if target.is_empty() || alias.is_empty() {
        bail!("--link {link:?} is not NAME[:ALIAS]");
    }
    let member = members["containers"].as_array().into_iter().flatten().find(|c| c["name"] == target);
    let address = member
        .and_then(|m| m["ips"][0]["address"].as_str())
        .and_then(|cidr| cidr.split('/').next())
        .with_context(|| format!("--link {link}: no running container named {target:?} is on network {network}"))?;
    let mut names = vec![alias.to_string()];
    if alias != target {
        names.push(target.to_string());
    }
    Ok((address.to_string(), names))
}

/// Adds the hooks after any the spec has.
fn add_hooks(spec: &mut Spec, add: Hook, del: Hook) -> Result<()> {
    let mut hooks = spec.hooks().clone().unwrap_or_default();
    let mut create_runtime = hooks.create_runtime().clone().unwrap_or_default();
    create_runtime.push(add);
    hooks.set_create_runtime(Some(create_runtime));
    let mut poststop = hooks.poststop().clone().unwrap_or_default();
    poststop.push(del);
    hooks.set_poststop(Some(poststop));
    spec.set_hooks(Some(hooks));
    Ok(())
}

/// Drops the network namespace (`None`: the host's) or joins the one at `path`.
fn set_network_namespace(spec: &mut Spec, path: Option<&Path>) -> Result<()> {
    let linux = spec.linux_mut().as_mut().context("the spec has no linux section")?;
    let mut namespaces: Vec<LinuxNamespace> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
        .collect();
    if let Some(path) = path {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path)
                .build()
                .context("cannot build the network namespace")?,
        );
    }
    linux.set_namespaces(Some(namespaces));
    Ok(())
}

/// Binds the target bundle's hosts, hostname and resolv.conf at /etc, and takes its hostname.
fn share_files(spec: &mut Spec, target: &Path) -> Result<()> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| {
        !["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"].contains(&m.destination().to_str().unwrap_or(""))
    });
    for file in ["hosts", "hostname", "resolv.conf"] {
        let source = target.join(file);
        if !source.is_file() {
            continue;
        }
        mounts.push(
            MountBuilder::default()
                .destination(Path::new("/etc").join(file))
                .typ("bind")
                .source(source)
                .options(vec!["rbind".into(), "rprivate".into()])
                .build()
                .context("cannot build a shared file's mount")?,
        );
    }
    spec.set_mounts(Some(mounts));
    if let Ok(hostname) = std::fs::read_to_string(target.join("hostname")) {
        spec.set_hostname(Some(hostname.trim().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A berth-cni that answers `container inspect` as berth-cni does for a free name.
    fn free_name_berth_cni() -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("berth-cni-free-name-{}", std::process::id()));
        if !path.exists() {
            let script = "#!/bin/sh\necho 'berth-cni: no running container is named \"app\"' >&2\nexit 1\n";
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        path
    }

    fn options(network: &str) -> NetworkOptions {
        NetworkOptions { network: network.into(), ..NetworkOptions::default() }
    }

    #[test]
    fn network_names_map_to_modes() {
        assert_eq!(options("bridge").mode().unwrap(), NetworkMode::Attached("berth".into()));
        assert_eq!(options("web").mode().unwrap(), NetworkMode::Attached("web".into()));
        assert_eq!(options("host").mode().unwrap(), NetworkMode::Host);
        assert_eq!(options("none").mode().unwrap(), NetworkMode::None);
        assert_eq!(options("container:db").mode().unwrap(), NetworkMode::Container("db".into()));
        assert!(options("container:").mode().is_err());
    }

    #[test]
    fn options_needing_a_network_of_its_own_are_refused_elsewhere() {
        let mut spec = Spec::default();
        for network in ["host", "none", "container:db"] {
            let refused = NetworkOptions { publish: vec!["80".into()], ..options(network) }
                .apply(&mut spec, Path::new("/b"), "x")
                .unwrap_err();
            assert!(refused.to_string().contains("-p/--publish"), "{refused}");
        }
        let refused =
            NetworkOptions { links: vec!["db".into()], ..options("none") }.apply(&mut spec, Path::new("/b"), "x");
        assert!(refused.unwrap_err().to_string().contains("--link"));
    }

    #[test]
    fn host_drops_the_network_namespace_and_attached_networks_get_both_hooks() {
        let mut spec = Spec::default();
        options("host").apply(&mut spec, Path::new("/b"), "x").unwrap();
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(namespaces.iter().all(|ns| ns.typ() != LinuxNamespaceType::Network));

        let mut spec = Spec::default();
        let mut annotations = std::collections::HashMap::new();
        annotations.insert("org.opencontainers.image.exposedPorts".to_string(), "80/tcp,53/udp".to_string());
        spec.set_annotations(Some(annotations));
        let chosen = NetworkOptions {
            publish: vec!["8080:80".into()],
            publish_all: true,
            aliases: vec!["api".into()],
            cni_state_dir: Some("/s".into()),
            berth_cni: Some(free_name_berth_cni()),
            ..options("web")
        };
        assert_eq!(chosen.apply(&mut spec, Path::new("/b"), "app").unwrap(), NetworkPlan::default());
        let hooks = spec.hooks().clone().unwrap();
        let add = &hooks.create_runtime().as_ref().unwrap()[0];
        assert_eq!(add.path(), &free_name_berth_cni());
        let args = add.args().clone().unwrap().join(" ");
        assert_eq!(
            args,
            "berth-cni hook add web --name app --hosts-file /b/hosts --publish 8080:80 \
             --publish 53/udp --alias api --state-dir /s"
        );
        let del = hooks.poststop().as_ref().unwrap()[0].args().clone().unwrap().join(" ");
        assert_eq!(del, "berth-cni hook del web --state-dir /s");
        std::fs::remove_file(free_name_berth_cni()).unwrap();
    }
}
