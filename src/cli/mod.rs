//! The command-line edge: parses arguments and calls into the library. Each subcommand lives in its own file
//! with its `Args` and a `run` function returning the process exit code; nothing here holds logic a
//! library user would need. Output goes through `outln!`/`errln!` (src/output.rs): a closed pipe never
//! panics.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

mod build;
mod containers;
mod help;
mod image_list;
mod images;
mod login;
mod mount;
mod overlayfs;
mod ps;
mod pull;
mod run;
mod system;
mod units;
mod volume;

/// Exit code docker uses when the tool itself (not the container's command) fails.
pub const EXIT_RIMG_ERROR: i32 = 125;

/// Options every subcommand shares: where the cache lives and how registries are reached.
#[derive(clap::Args, Debug, Clone)]
pub struct Globals {
    /// Root of the image cache and container state.
    #[arg(long, global = true, env = "RIMG_ROOT", default_value = "/var/lib/rimg")]
    pub root: PathBuf,
    /// Registry mirror for docker.io, tried before the origin (repeatable), as dockerd's registry-mirrors.
    #[arg(long = "registry-mirror", global = true, value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// Registry reached over plain HTTP (repeatable), as dockerd's insecure-registries.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// rimg's config file (mirrors, insecure registries); default $RIMG_CONFIG or /etc/rimg/config.json.
    #[arg(long, global = true, env = "RIMG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long = "log-level", global = true, default_value = "warn")]
    pub log_level: String,
}

#[derive(Parser, Debug)]
#[command(
    name = "rimg",
    version,
    about = "Pull, run, build and push container images without a daemon",
    after_help = "Examples:\n  rimg run --rm -it alpine sh\n  rimg --root /srv/rimg images\n  \
                  rimg COMMAND --help    (each command's options and examples)"
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image from a registry into the local cache.
    Pull(pull::Args),
    /// List images in the cache.
    Images(image_list::ImagesArgs),
    /// Show an image's details as docker-shaped JSON.
    Inspect(images::InspectArgs),
    /// Show the history of an image.
    History(image_list::HistoryArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Image housekeeping.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Write images to a docker-archive tar.
    Save(images::SaveArgs),
    /// Load images from a docker-archive or OCI-layout tar.
    Load(images::LoadArgs),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Push an image to a registry.
    Push(build::PushArgs),
    /// Write an image's flattened rootfs into a directory (as umoci unpack).
    Unpack(images::UnpackArgs),
    /// Write a container's or image's flattened rootfs as one tar (as docker export).
    Export(images::ExportArgs),
    /// Store credentials for a registry in ~/.docker/config.json.
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(login::LogoutArgs),
    /// Mount an image's rootfs (copy-on-write) at a directory.
    Mount(mount::MountArgs),
    /// Unmount a rootfs mounted by `rimg mount`.
    Umount(mount::UmountArgs),
    /// The FUSE overlay filesystem with fuse-overlayfs's calling convention.
    Overlayfs(overlayfs::Args),
    /// Run a command in a new container.
    Run(run::Args),
    /// List containers.
    Ps(ps::PsArgs),
    /// Stop running containers (stop signal, then SIGKILL after a timeout).
    Stop(containers::StopArgs),
    /// Send a signal to running containers.
    Kill(containers::KillArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Run a command inside a running container.
    Exec(containers::ExecArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(containers::WaitArgs),
    /// Make a new image from a container's changes.
    Commit(containers::CommitArgs),
    /// Container housekeeping.
    #[command(subcommand)]
    Container(containers::ContainerCommand),
    /// Show rimg's version.
    Version(system::VersionArgs),
    /// Show system-wide information.
    Info(system::InfoArgs),
    /// Disk usage and housekeeping.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
}

/// Entry point for the `rimg` binary; returns the process exit code. A binary invoked as `rimg-overlayfs`
/// behaves as `rimg overlayfs`, so mount.fuse3 and podman's mount_program can call it by that name.
pub fn main() -> i32 {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if invoked_as == "rimg-overlayfs" || invoked_as == "mount.fuse.rimg-overlayfs" {
        argv.insert(1, "overlayfs".into());
    }
    let mut cmd = Cli::command();
    help::adjust(&mut cmd);
    let parsed = cmd.try_get_matches_from(argv).and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            crate::errln!("rimg: {}", usage_error_line(&e));
            return EXIT_RIMG_ERROR;
        }
    };
    init_logging(&cli.globals.log_level);
    if matches!(
        cli.command,
        Command::Images(_)
            | Command::Image(images::ImageCommand::Ls(_))
            | Command::Inspect(_)
            | Command::History(_)
            | Command::Save(_)
            | Command::Export(_)
            | Command::Ps(_)
            | Command::Logs(_)
    ) {
        // Commands that only read and print: die at the first write into a closed pipe, as `ls | head`
        // does (nothing is half-done by dying). Every other command finishes its work with its output
        // dropped and then dies of SIGPIPE in `output::finish` (see output.rs for why).
        crate::output::die_on_closed_pipe();
    }
    let g = &cli.globals;
    let result = match cli.command {
        Command::Pull(a) => pull::run(a, g),
        Command::Images(a) => image_list::images(a, g),
        Command::History(a) => image_list::history(a, g),
        Command::Inspect(a) => images::inspect(a, g),
        Command::Tag(a) => images::tag(a, g),
        Command::Rmi(a) => images::rmi(a, g),
        Command::Image(a) => images::image(a, g),
        Command::Save(a) => images::save(a, g),
        Command::Load(a) => images::load(a, g),
        Command::Build(a) => build::build(a, g),
        Command::Push(a) => build::push(a, g),
        Command::Unpack(a) => images::unpack(a, g),
        Command::Export(a) => images::export(a, g),
        Command::Login(a) => login::login(a, g),
        Command::Logout(a) => login::logout(a, g),
        Command::Mount(a) => mount::mount(a, g),
        Command::Umount(a) => mount::umount(a, g),
        Command::Overlayfs(a) => overlayfs::run(a, g),
        Command::Run(a) => run::run(a, g),
        Command::Ps(a) => ps::ps(a, g),
        Command::Stop(a) => containers::stop(a, g),
        Command::Kill(a) => containers::kill(a, g),
        Command::Rm(a) => containers::rm(a, g),
        Command::Logs(a) => containers::logs(a, g),
        Command::Exec(a) => containers::exec(a, g),
        Command::Wait(a) => containers::wait(a, g),
        Command::Commit(a) => containers::commit(a, g),
        Command::Container(a) => containers::container(a, g),
        Command::Volume(a) => volume::volume(a, g),
        Command::Version(a) => system::version(a, g),
        Command::Info(a) => system::info(a, g),
        Command::System(a) => system::system(a, g),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            crate::errln!("rimg: {}", one_line(&e));
            EXIT_RIMG_ERROR
        }
    };
    crate::output::finish(code)
}

/// A usage error as one line, as every other error of rimg: clap's own text without its layout and hints
/// (`invalid value 'x' for '--userns <USERNS>' [possible values: host, auto]`).
fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Render an error chain on one line ("outer: cause: root cause"), as users expect from docker.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for (i, cause) in e.chain().enumerate() {
        let text = cause.to_string();
        if i > 0 {
            if s.contains(&text) {
                continue;
            }
            s.push_str(": ");
        }
        s.push_str(&text);
    }
    s.replace('\n', " ")
}

fn init_logging(level: &str) {
    let env = env_logger::Env::default().filter_or("RIMG_LOG", level);
    let _ = env_logger::Builder::from_env(env).format_timestamp(None).format_target(false).try_init();
}
