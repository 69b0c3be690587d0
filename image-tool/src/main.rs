//! berth-image's CLI: parses arguments and calls the library's commands.
use berth_image::run_options::{InitLayerOptions, NetworkOptions, ProcessOptions, ResourceOptions, RunOptions};
use berth_image::{
    commands,
    store::{Store, DEFAULT_STORE},
};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth-image",
    about = "Import and pull OCI images into berth's content-addressed store and unpack them into overlay bundles",
    after_help = "Layers are hostile input: each one is extracted below its own directory only, and one that expands past --max-layer-bytes (default 64 GiB) or --max-layer-entries (default 4000000) is refused."
)]
struct Cli {
    /// Store directory.
    #[arg(long, global = true, default_value = DEFAULT_STORE)]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// What `unpack --help` adds after the options: the annotations it writes and the files it reads.
const UNPACK_NOTES: &str = "Annotations written: org.opencontainers.image.stopSignal (--stop-signal, else the image's StopSignal), berth.stop-timeout (--stop-timeout, seconds; `berth stop` reads both), berth.name (--name, else the bundle directory's name).
The bundle's hostname, hosts and resolv.conf are bind-mounted at /etc; resolv.conf is made from the host's /etc/resolv.conf (or /run/systemd/resolve/resolv.conf when that names only 127.0.0.53); BERTH_HOST_RESOLV_CONF and BERTH_SYSTEMD_RESOLV_CONF name other files to read instead (for tests).";

#[derive(Args)]
struct UnpackArgs {
    /// The image (a stored name or digest).
    image: String,
    /// The bundle directory to make.
    bundle: PathBuf,
    /// os/arch[/variant] to choose from a multi-platform image (default: this host's).
    #[arg(long)]
    platform: Option<String>,
    /// Most uncompressed bytes one layer may expand to.
    #[arg(long, default_value_t = berth_image::extract::DEFAULT_MAX_BYTES)]
    max_layer_bytes: u64,
    /// Most tar entries one layer may hold.
    #[arg(long, default_value_t = berth_image::extract::DEFAULT_MAX_ENTRIES)]
    max_layer_entries: u64,
    #[command(flatten)]
    process: ProcessOptions,
    #[command(flatten)]
    resources: ResourceOptions,
    #[command(flatten)]
    init_layer: InitLayerOptions,
    #[command(flatten)]
    network: NetworkOptions,
    #[command(flatten)]
    storage: berth_image::storage_options::StorageOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Import an OCI image-layout directory or oci-archive (detected): PATH (every named manifest) or PATH:TAG.
    Import { path: String },
    /// Pull an image from a registry (short names as Docker: busybox is docker.io/library/busybox:latest).
    Pull {
        reference: String,
        /// os/arch[/variant] to pull from a multi-platform image (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// Talk plain HTTP (the default for registries on loopback).
        #[arg(long)]
        plain_http: bool,
        /// Credentials file (auth.json or Docker's config.json); by default the usual ones.
        #[arg(long)]
        authfile: Option<PathBuf>,
    },
    /// List stored images and their manifest digests.
    List,
    /// Print an image's manifest and config as JSON.
    Inspect { name: String },
    /// Remove an image name from the store (its blobs stay until `gc`).
    Rm { name: String },
    /// Remove blobs and extracted layers that no stored image or bundle uses.
    Gc,
    /// Make a runtime bundle: rootfs/ an overlay of the image's layers, config.json from its
    /// config and `docker run`'s options, and the init layer's hostname, hosts and resolv.conf.
    #[command(after_help = UNPACK_NOTES)]
    Unpack(Box<UnpackArgs>),
    /// Unmount a bundle made by unpack and remove it with its writable layer; refused while a process (a container's, created or running) has its root or working directory in the rootfs.
    Release {
        bundle: PathBuf,
        /// Also remove the bundle's anonymous volumes (named volumes always stay).
        #[arg(long)]
        volumes: bool,
    },
    /// Volumes of the store: create, ls, inspect, rm, prune.
    Volume {
        #[command(subcommand)]
        command: berth_image::volume_commands::VolumeCommand,
    },
    /// Disk usage per image (virtual size), per bundle (own writable bytes, virtual size) and per volume.
    Df {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Copy files, directories or a tar stream into or out of a bundle's container, as `docker cp`:
    /// SRC or DST is BUNDLE:PATH (the other a host path, or - for a tar stream on stdin/stdout).
    /// A directory DST receives SRC under its name (SRC/. copies the contents); a missing DST
    /// becomes SRC's copy. While the container runs, paths are its own view (volumes, tmpfs);
    /// once stopped, the rootfs and bind sources. Symlinks resolve inside the container.
    #[command(
        after_help = "Examples:\n  berth-image cp ./site /srv/web:/var/www\n  berth-image cp /srv/web:/var/log/app.log .\n  tar -c conf | berth-image cp - /srv/web:/etc/app"
    )]
    Cp {
        src: String,
        dst: String,
        /// Keep owners (default: root in the container, you on the host).
        #[arg(short = 'a', long)]
        archive: bool,
        /// Follow a symlink named as SRC.
        #[arg(short = 'L', long)]
        follow_link: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = Store::open(&cli.store).and_then(|store| match &cli.command {
        Command::Import { path } => commands::import(&store, path, &mut out),
        Command::Pull { reference, platform, plain_http, authfile } => {
            platform.as_deref().map(berth_image::manifest::parse_platform).transpose().and_then(|platform| {
                commands::pull(
                    &store,
                    reference,
                    &berth_image::registry::PullOptions {
                        platform,
                        plain_http: *plain_http,
                        authfile: authfile.clone(),
                    },
                    &mut out,
                )
            })
        }
        Command::List => commands::list(&store, &mut out),
        Command::Inspect { name } => commands::inspect(&store, name, &mut out),
        Command::Rm { name } => commands::rm(&store, name),
        Command::Gc => commands::gc(&store, &mut out),
        Command::Unpack(args) => {
            let limits =
                berth_image::extract::Limits { max_bytes: args.max_layer_bytes, max_entries: args.max_layer_entries };
            let options = RunOptions {
                process: args.process.clone(),
                resources: args.resources.clone(),
                init_layer: args.init_layer.clone(),
                network: args.network.clone(),
                storage: args.storage.clone(),
            };
            commands::unpack(&store, &args.image, &args.bundle, args.platform.as_deref(), limits, &options)
        }
        Command::Release { bundle, volumes } => commands::release(&store, bundle, *volumes),
        Command::Volume { command } => berth_image::volume_commands::run(&store, command, &mut out),
        Command::Df { json } => commands::df(&store, *json, &mut out),
        Command::Cp { src, dst, archive, follow_link } => {
            commands::cp(src, dst, berth_image::cp::Options { archive: *archive, follow_link: *follow_link }, &mut out)
        }
    });
    if let Err(e) = result {
        eprintln!("berth-image: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn unpack_takes_docker_run_options_and_a_trailing_command() {
        let cli = Cli::parse_from([
            "berth-image",
            "unpack",
            "img",
            "/b",
            "-e",
            "A=1",
            "-u",
            "app:wheel",
            "--memory",
            "64m",
            "--cap-drop",
            "ALL",
            "--add-host",
            "db:192.0.2.1",
            "--name",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi",
        ]);
        let Command::Unpack(args) = cli.command else { panic!("not unpack") };
        assert_eq!((args.image.as_str(), args.bundle.to_str().unwrap()), ("img", "/b"));
        assert_eq!(args.process.command, ["sh", "-c", "echo hi"]);
        assert_eq!(args.process.user.as_deref(), Some("app:wheel"));
        assert_eq!(args.resources.memory, Some(64 << 20));
        assert_eq!(args.init_layer.name.as_deref(), Some("web"));
    }
}
