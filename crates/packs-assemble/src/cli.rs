//! The command line: subcommands, flags and the help text that teaches them.

use std::path::PathBuf;

use attune_contract::{env, exit};
use attune_image::image_layout::DEFAULT_NAME;
use attune_image::image_path;
use attune_pack::Arch;
use clap::{Args, Parser, Subcommand};

pub use attune_contract::LogFormat;
pub use attune_image::ImageFormat;

/// `--help`'s last paragraphs: the exit codes (every binary's), an example.
fn after_help() -> String {
    format!("{}\n\n{EXAMPLE}", exit::help())
}

const EXAMPLE: &str = "\
Example:
  nix build .#pack-binaries-amd64 -o bins   # or scripts/build-pack-binaries --arch amd64: target/pack-binaries-amd64
  packs-assemble assemble --packs ./packs --binaries ./bins --arch amd64 --out /var/lib/attune/packs
  packs-assemble verify /var/lib/attune/packs
  packs-assemble history /var/lib/attune/packs
  packs-assemble rollback /var/lib/attune/packs
  packs-assemble export --volume /var/lib/attune/packs --assembler ./packs-assemble-amd64 --arch amd64 --out - | docker load";

/// Turns Attune pack sources and fresh static binaries into a packs volume that
/// services read: verified (static, right architecture, executable), atomic
/// (readers always see one whole generation), incremental and deterministic.
#[derive(Debug, Parser)]
#[command(name = "packs-assemble", version, after_help = after_help())]
pub struct Cli {
    /// Log format on stderr: `human` (also `pretty`), or `json` (one object per line).
    #[arg(long, global = true, default_value_t = LogFormat::Human, env = env::LOG_FORMAT)]
    pub log_format: LogFormat,
    /// More logs (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print the result as JSON on stdout (its `ok` agrees with the exit code).
    #[arg(long, global = true)]
    pub json: bool,
    /// Name the files below FROM as below TO in errors and warnings, for
    /// example /source/packs=./packs: how a container says the paths its user
    /// knows (the stack's init-packs sets it).
    #[arg(long, global = true, value_name = "FROM=TO", env = env::SHOW_PATH_AS, value_parser = parse_path_alias)]
    pub show_path_as: Option<(PathBuf, String)>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate packs, overlay binaries, and publish a new generation of the volume.
    ///
    /// Writes nothing when the inputs are unchanged (same root hash). Otherwise it
    /// writes a complete generation beside the current one and commits it by
    /// renaming `..data`. Generations share unchanged packs whole through the
    /// volume's store (`..store`); a changed pack is written as real directories
    /// with its unchanged files hard-linked; old generations beyond --keep, and
    /// what only they used, are removed. Every published file it trusts is
    /// confirmed first (a stat against the recorded inode stamp, or a re-read);
    /// damage is repaired from the inputs. Upstream Attune's
    /// `.attune-packs-sentinel` is kept. Killing it at any moment leaves the
    /// previous generation intact.
    Assemble(AssembleArgs),
    /// Validate pack sources without publishing anything.
    Check(CheckArgs),
    /// Check a published volume: hashes, modes, stray files, and that every native
    /// entry point is a static executable for the architecture. Each problem comes
    /// with its cause and fix.
    Verify(VerifyArgs),
    /// Show what binaries are (machine, static or dynamic, interpreter, needed
    /// libraries, executable bit) and whether they run in an empty container.
    Inspect(InspectArgs),
    /// List the kept generations of a volume: id, time, root hash, and the
    /// packs that changed from the one before.
    History(HistoryArgs),
    /// Make a kept generation current again, atomically, after confirming every
    /// file of it against its manifest; services pick it up as they pick up any
    /// publish. Exit 1 (nothing changed) if it is damaged.
    Rollback(RollbackArgs),
    /// Write the packs image of a volume: one base layer (this program for the
    /// image's architecture, /etc/passwd, /etc/group, /tmp, the mount points)
    /// and one layer per pack, the same bytes for the same inputs, as a docker
    /// archive or an OCI layout. Its entrypoint publishes its packs into the
    /// volume mounted at /opt/attune/packs and verifies it. The volume must
    /// verify for --arch; the layout is docker/IMAGE-LAYOUT.md's.
    Export(ExportArgs),
    /// Write a service image of a root filesystem directory (docker/build-images'
    /// packs-init, api, sensor, worker, agent, runtime-python): one layer, the
    /// same bytes for the same directory, as a docker archive or an OCI layout.
    /// Entries keep their modes and links, owners are 0:0 but --owner's, every
    /// executable ELF must run in an empty --arch container (below --dynamic-ok,
    /// be for --arch); the config is docker/IMAGE-LAYOUT.md's.
    ExportRootfs(ExportRootfsArgs),
    /// Check that an image has the packs image's layout (docker/IMAGE-LAYOUT.md):
    /// a docker archive (`docker save`, `-` for stdin) or an OCI layout
    /// directory. Each difference is reported; exit 1 if there is any.
    CheckImage(CheckImageArgs),
}

/// `assemble`.
#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// A directory of packs (each subdirectory with a pack.yaml), or one pack. Repeatable.
    #[arg(long = "packs", value_name = "DIR", required = true)]
    pub packs: Vec<PathBuf>,
    /// A binaries tree (`<pack>/sensors/<binary>`, from `scripts/build-pack-binaries` or `nix build .#pack-binaries-<arch>`);
    /// its files replace the same paths in the sources. Repeatable.
    #[arg(long = "binaries", value_name = "DIR")]
    pub binaries: Vec<PathBuf>,
    /// A dependencies tree (`<pack>/lib/python3.11/site-packages/...`, from
    /// `scripts/build-pack-deps`): files added to the packs, built for `--arch`;
    /// none may replace a pack's own file. Repeatable.
    #[arg(long = "deps", value_name = "DIR")]
    pub deps: Vec<PathBuf>,
    /// Architecture of the containers that will run the binaries [default: this machine's].
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Option<Arch>,
    /// Treat every warning as an error (unknown keys, skipped files, stale
    /// binaries, ...): a lint for packs meant to be clean.
    #[arg(long)]
    pub strict: bool,
    /// The volume directory (created if missing).
    #[arg(long, value_name = "VOL")]
    pub out: PathBuf,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Generations to keep, the current one included.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub keep: u16,
    /// Owner of every published file (needs root), for example 1000:1000.
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub chown: Option<(u32, u32)>,
    /// Delete entries in the volume root that packs-assemble did not write
    /// (for example the copies of an older copy script).
    #[arg(long)]
    pub adopt: bool,
    /// Skip flushing the filesystem before the commit point (faster; a power loss
    /// may then lose the new generation, never the old one).
    #[arg(long)]
    pub no_sync: bool,
    /// Publish a fresh copy of every file and directory even if nothing changed,
    /// sharing nothing with what is there: repairs a volume that `verify` found
    /// damaged.
    #[arg(long)]
    pub force: bool,
    /// After publishing, verify the volume (as `packs-assemble verify` does) and
    /// fail, exit 1, if it is not fit for services: for init containers that
    /// must not let services start on a bad volume.
    #[arg(long)]
    pub verify: bool,
    /// Seconds to wait for another run publishing to the same volume.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lock_timeout: u64,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Directories of packs, or single packs.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Binaries trees that will overlay the sources.
    #[arg(long = "binaries", value_name = "DIR")]
    pub binaries: Vec<PathBuf>,
    /// Dependencies trees that will be added to the packs.
    #[arg(long = "deps", value_name = "DIR")]
    pub deps: Vec<PathBuf>,
    /// Architecture to check native binaries for [default: this machine's].
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Option<Arch>,
    /// Treat every warning as an error (unknown keys, skipped files, stale
    /// binaries, ...): a lint for packs meant to be clean.
    #[arg(long)]
    pub strict: bool,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The volume directory.
    #[arg(value_name = "VOL")]
    pub volume: PathBuf,
    /// Architecture to check against [default: the one recorded in the manifest].
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Option<Arch>,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Files to inspect.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Give a verdict for this architecture [default: this machine's]; exit 1 if any file would not run.
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Option<Arch>,
}

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The volume directory.
    #[arg(value_name = "VOL")]
    pub volume: PathBuf,
}

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The volume directory.
    #[arg(value_name = "VOL")]
    pub volume: PathBuf,
    /// The kept generation to make current (`..<id>`, or its id)
    /// [default: the newest one older than the current generation].
    #[arg(value_name = "GEN")]
    pub generation: Option<String>,
    /// Seconds to wait for a run publishing to the same volume.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lock_timeout: u64,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The assembled volume (published by `assemble`, for --arch).
    #[arg(long, value_name = "VOL")]
    pub volume: PathBuf,
    /// The static packs-assemble for --arch that the image runs.
    #[arg(long, value_name = "FILE")]
    pub assembler: PathBuf,
    /// The image's architecture.
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Arch,
    /// What to write.
    #[arg(long, value_enum, default_value_t = ImageFormat::DockerArchive)]
    pub format: ImageFormat,
    /// The repository name.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// The tag [default: the first 16 hex digits of the image id].
    #[arg(long)]
    pub tag: Option<String>,
    /// Where to write it, which must not exist: a file (docker-archive; `-` for
    /// stdout) or a directory (oci).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// `export-rootfs`.
#[derive(Debug, Args)]
pub struct ExportRootfsArgs {
    /// The root filesystem: a directory whose entries become the image's.
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// The image's architecture; every ELF in the directory must be for it.
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Arch,
    /// One of the stack's service images (api, sensor, worker, agent,
    /// runtime-python, packs-init), laid out as crates/attune-image/services.json
    /// has it: its name, entrypoint, cmd, mount points owned by 1000, where
    /// dynamic ELFs are accepted, and passwd, group and /tmp (written when the
    /// directory lacks them). docker/build-images writes each image this way.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["entrypoint", "cmd"])]
    pub service: Option<String>,
    /// The repository name, for example attune/api [default with --service: attune/NAME].
    #[arg(long, required_unless_present = "service")]
    pub name: Option<String>,
    /// The tag [default: the first 16 hex digits of the image id].
    #[arg(long)]
    pub tag: Option<String>,
    /// `Entrypoint`, a JSON array of strings, for example
    /// '["/usr/local/bin/attune-api"]'; the first is an executable file of the directory.
    #[arg(long, value_name = "JSON", value_parser = parse_argv, required_unless_present = "service")]
    pub entrypoint: Option<Argv>,
    /// `Cmd`, a JSON array of strings [default: none].
    #[arg(long, value_name = "JSON", value_parser = parse_argv)]
    pub cmd: Option<Argv>,
    /// A label; repeatable. `io.attune.arch` is --arch's.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The owner of one entry, for example /opt/attune/data=1000:1000; repeatable.
    /// Every other entry is owned by 0:0.
    #[arg(long = "owner", value_name = "PATH=UID:GID", value_parser = parse_path_owner)]
    pub owners: Vec<(String, (u32, u32))>,
    /// Below this path (for example /usr, or / for a runtime image of
    /// Debian packages), an executable ELF may be dynamic: it runs with the
    /// libc and libraries of the image itself. It must still be for --arch.
    /// Elsewhere every executable ELF must be static. Repeatable.
    #[arg(long = "dynamic-ok", value_name = "PATH", value_parser = parse_dynamic_ok)]
    pub dynamic_ok: Vec<String>,
    /// What to write.
    #[arg(long, value_enum, default_value_t = ImageFormat::DockerArchive)]
    pub format: ImageFormat,
    /// Where to write it, which must not exist: a file (docker-archive; `-` for
    /// stdout) or a directory (oci).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// An argument vector given as a JSON array of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

/// `check-image`.
#[derive(Debug, Args)]
pub struct CheckImageArgs {
    /// A docker archive file (`-`: stdin) or an OCI layout directory.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The architecture it must be for [default: the one its config names].
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Option<Arch>,
}

fn parse_argv(s: &str) -> Result<Argv, String> {
    match serde_json::from_str::<Vec<String>>(s) {
        Ok(v) if !v.is_empty() => Ok(Argv(v)),
        Ok(_) => Err("an empty array runs nothing: give at least the program".to_string()),
        Err(e) => Err(format!(
            "`{s}` is not a JSON array of strings ({e}); for example '[\"/usr/local/bin/attune-api\"]'"
        )),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example org.opencontainers.image.title=attune api)"
        )),
    }
}

fn parse_path_owner(s: &str) -> Result<(String, (u32, u32)), String> {
    let (path, owner) = s.rsplit_once('=').ok_or_else(|| {
        format!("`{s}` is not PATH=UID:GID (for example /opt/attune/data=1000:1000)")
    })?;
    let rel = image_path(path).ok_or_else(|| {
        format!("`{path}` in `{s}` is not an absolute path without `.`, `..` or `//` (for example /opt/attune/data)")
    })?;
    Ok((rel, parse_owner(owner)?))
}

/// The layer path below which `--dynamic-ok` accepts dynamic ELFs (`/`: all, the empty path).
fn parse_dynamic_ok(s: &str) -> Result<String, String> {
    if s == "/" {
        return Ok(String::new());
    }
    image_path(s).ok_or_else(|| {
        format!("`{s}` is not an absolute path without `.`, `..` or `//` (for example /usr)")
    })
}

pub(crate) fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not UID:GID (for example 1000:1000)"))?;
    let num = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("`{x}` in `{s}` is not a number"))
    };
    Ok((num(u)?, num(g)?))
}

/// `FROM=TO` of `--show-path-as`.
fn parse_path_alias(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once('=') {
        Some((from, to)) if from.starts_with('/') && !to.is_empty() => {
            Ok((PathBuf::from(from), to.to_string()))
        }
        _ => Err(format!(
            "`{s}` is not FROM=TO with an absolute FROM (for example /source/packs=./packs)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The services took `ATTUNE_LOG_FORMAT=pretty` (and the README says so
    /// for every binary); packs-assemble refused it: its own `LogFormat`.
    #[test]
    fn packs_assemble_accepts_log_format_pretty_like_the_services() {
        let cli = Cli::try_parse_from(["packs-assemble", "--log-format", "pretty", "history", "v"])
            .unwrap();
        assert_eq!(cli.log_format, LogFormat::Human);
        let command = Cli::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "log_format")
            .unwrap();
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(env::LOG_FORMAT),
            "the variable is read through the same parser"
        );
        let e = Cli::try_parse_from(["packs-assemble", "--log-format", "yaml", "history", "v"])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`yaml` is not one of human, pretty, json"),
            "{e}"
        );
    }

    /// `--json` is one global flag, never a subcommand's own copy.
    #[test]
    fn json_is_one_global_flag() {
        let command = Cli::command();
        let json = command
            .get_arguments()
            .find(|a| a.get_long() == Some("json"))
            .unwrap();
        assert!(json.is_global_set());
        for sub in command.get_subcommands() {
            assert!(
                sub.get_arguments().all(|a| a.get_long() != Some("json")),
                "{} has its own --json",
                sub.get_name()
            );
        }
    }

    #[test]
    fn help_ends_with_the_exit_codes_of_every_binary() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains(&exit::help()), "{help}");
    }

    #[test]
    fn owner_parses() {
        assert_eq!(parse_owner("1000:1001"), Ok((1000, 1001)));
        assert!(parse_owner("root").unwrap_err().contains("UID:GID"));
        assert!(parse_owner("a:1").is_err());
    }

    #[test]
    fn export_rootfs_values_parse() {
        for bad in ["x", "[]", r#"["a", 1]"#] {
            assert!(parse_argv(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_argv(r#"["/a","b"]"#),
            Ok(Argv(vec!["/a".into(), "b".into()]))
        );
        for bad in ["opt/x=1:1", "/a/../b=1:1", "/a=1", "/=1:1"] {
            assert!(parse_path_owner(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_path_owner("/opt/attune/data/=1000:1001"),
            Ok(("opt/attune/data".to_string(), (1000, 1001)))
        );
    }
}
