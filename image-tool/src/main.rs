//! berth-image's CLI: parses arguments and calls the library's commands.
use berth_image::{
    commands,
    store::{Store, DEFAULT_STORE},
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth-image",
    about = "Import OCI images into berth's content-addressed store"
)]
struct Cli {
    /// Store directory.
    #[arg(long, global = true, default_value = DEFAULT_STORE)]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import an OCI image-layout directory or oci-archive (detected): PATH (every named manifest) or PATH:TAG.
    Import { path: String },
    /// List stored images and their manifest digests.
    List,
    /// Print an image's manifest and config as JSON.
    Inspect { name: String },
    /// Remove an image name from the store (its blobs stay until `gc`).
    Rm { name: String },
    /// Remove blobs that no stored image uses.
    Gc,
}

fn main() {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = Store::open(&cli.store).and_then(|store| match &cli.command {
        Command::Import { path } => commands::import(&store, path, &mut out),
        Command::List => commands::list(&store, &mut out),
        Command::Inspect { name } => commands::inspect(&store, name, &mut out),
        Command::Rm { name } => commands::rm(&store, name),
        Command::Gc => commands::gc(&store, &mut out),
    });
    if let Err(e) = result {
        eprintln!("berth-image: {e:#}");
        std::process::exit(1);
    }
}
