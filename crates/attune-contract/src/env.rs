//! Every `ATTUNE_*` environment variable of the project, by who reads it: the
//! services, the sensor contract, the action contract, and the scripts.
//!
//! Each name is a constant here and nowhere else: Rust code names it by the
//! constant, and `tests/stack/tests/contracts.rs` fails on a name in any file of
//! the repository (shell, YAML, Markdown, Rust) that is not one of [`GROUPS`],
//! and checks docs/reference.md's table of them against this module.

/// One variable: its name and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var {
    /// The name, for example `ATTUNE_API_URL`; a name ending in `_` is a prefix.
    pub name: &'static str,
    /// What it means, as its constant's documentation says.
    pub doc: &'static str,
}

/// The variables read by one part of the system.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    /// Who reads them, as the group constant's documentation says.
    pub title: &'static str,
    /// The variables, in the order of this file.
    pub vars: &'static [Var],
}

/// Defines one constant per variable, with its documentation, and the group
/// that lists them with the same text: the documentation is written once.
macro_rules! group {
    (
        $(#[doc = $gdoc:literal])+
        $group:ident;
        $( $(#[doc = $doc:literal])+ $name:ident = $value:literal; )+
    ) => {
        $( $(#[doc = $doc])+ pub const $name: &str = $value; )+
        $(#[doc = $gdoc])+
        pub const $group: Group = Group {
            title: concat!($($gdoc),+),
            vars: &[$(Var { name: $value, doc: concat!($($doc),+) }),+],
        };
    };
}

group! {
    /// Settings of the services (attune-api, attune-worker, attune-sensor),
    /// each also a flag that `--help` names with its default.
    SERVICE_VARS;
    /// API base URL, for example `http://api:8080`: the worker and the sensor
    /// service call it, and hand it on to every action and sensor.
    API_URL = "ATTUNE_API_URL";
    /// The shared bearer token: the api requires it, the worker and the sensor
    /// service send it, and the sensor service hands it on to sensors.
    API_TOKEN = "ATTUNE_API_TOKEN";
    /// Address the api listens on.
    LISTEN = "ATTUNE_API_LISTEN";
    /// The api's SQLite database file, or `:memory:`.
    DB = "ATTUNE_DB";
    /// The file holding the api's secrets key, 64 hex digits, mode 0600
    /// (by default `<ATTUNE_DB>.key`, generated on first start).
    SECRETS_KEY_FILE = "ATTUNE_SECRETS_KEY_FILE";
    /// The api's secrets key itself, 64 hex digits, instead of a key file.
    SECRETS_KEY = "ATTUNE_SECRETS_KEY";
    /// The packs volume, read-only.
    PACKS_DIR = "ATTUNE_PACKS_DIR";
    /// Developer packs, read-write; a pack here overrides the volume's pack of
    /// the same ref.
    PACKS_DEV_DIR = "ATTUNE_PACKS_DEV_DIR";
    /// Where the sensor service keeps each sensor's log and spool file.
    LOGS_DIR = "ATTUNE_LOGS_DIR";
    /// `human` (also `pretty`) or `json`: the log lines of every service, of
    /// the timer sensor (the sensor service hands it on) and of packs-assemble.
    LOG_FORMAT = "ATTUNE_LOG_FORMAT";
    /// `FROM=TO`: packs-assemble names the files below FROM as below TO, so a
    /// container says the paths its user knows (the stack's init-packs sets
    /// `/source/packs=` the host's packs directory).
    SHOW_PATH_AS = "ATTUNE_SHOW_PATH_AS";
    /// `error`, `warn` (also `warning`), `info`, `debug` or `trace`: the log
    /// level of every service and of the timer sensor.
    LOG_LEVEL = "ATTUNE_LOG_LEVEL";
    /// Seconds a stopping service (SIGTERM, SIGINT) gives the work in flight
    /// to finish: the api's requests, the worker's actions, the sensor
    /// service's sensors.
    DRAIN_TIMEOUT = "ATTUNE_DRAIN_TIMEOUT";
    /// Seconds between the api's checks of the volume's generation (it
    /// reloads the packs when it changes).
    PACKS_WATCH_SECONDS = "ATTUNE_PACKS_WATCH_SECONDS";
    /// Connections the api holds open at once; at the limit a new one takes
    /// the place of the idlest not in a handler, and an eighth is kept for
    /// `/health` (others get 503).
    API_MAX_CONNECTIONS = "ATTUNE_API_MAX_CONNECTIONS";
    /// Seconds a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open, and how long a write may wait for a
    /// client that reads nothing.
    API_HEADER_TIMEOUT = "ATTUNE_API_HEADER_TIMEOUT";
    /// Seconds a client has to send a whole request body (then 408).
    API_BODY_TIMEOUT = "ATTUNE_API_BODY_TIMEOUT";
    /// Largest request body in bytes (then 413).
    API_BODY_LIMIT = "ATTUNE_API_BODY_LIMIT";
    /// The name a worker reports to the api.
    WORKER_NAME = "ATTUNE_WORKER_NAME";
    /// Executions a worker runs at once.
    WORKER_CONCURRENCY = "ATTUNE_WORKER_CONCURRENCY";
    /// Bytes of stdout and of stderr a worker keeps per execution.
    WORKER_MAX_OUTPUT = "ATTUNE_WORKER_MAX_OUTPUT";
    /// Seconds between the sensor service's checks of packs, rules and the
    /// volume's generation.
    SENSOR_POLL_SECONDS = "ATTUNE_SENSOR_POLL_SECONDS";
}

group! {
    /// Upstream Attune's sensor contract: what the sensor service sets for
    /// each sensor process (with `ATTUNE_API_URL`, `ATTUNE_API_TOKEN`,
    /// `ATTUNE_LOG_LEVEL`, `ATTUNE_LOG_FORMAT`), and the timer sensor's own
    /// settings; the timer sensor takes the same keys as one JSON object on
    /// stdin with `--stdin-config`.
    SENSOR_VARS;
    /// The sensor's ref, for example `core.timer_sensor`.
    SENSOR_REF = "ATTUNE_SENSOR_REF";
    /// JSON array of the sensor's trigger instances, `[{id, ref, config}]`:
    /// the enabled rules of its trigger types.
    SENSOR_TRIGGERS = "ATTUNE_SENSOR_TRIGGERS";
    /// A file where the sensor keeps the events still unsent at any stop, in
    /// order, for its next start, which sends them first.
    SENSOR_SPOOL = "ATTUNE_SENSOR_SPOOL";
    /// The timer sensor's seconds between rule reconciliations (0: never).
    SENSOR_RECONCILE_SECONDS = "ATTUNE_SENSOR_RECONCILE_SECONDS";
    /// Events the timer sensor holds while the API is unreachable.
    SENSOR_QUEUE_CAPACITY = "ATTUNE_SENSOR_QUEUE_CAPACITY";
}

group! {
    /// Upstream Attune's action contract: what the worker sets for each action
    /// process (with `ATTUNE_API_URL`); a parameter never overrides one of
    /// these (`ACTION_RUNTIME`).
    ACTION_VARS;
    /// The execution's id.
    EXEC_ID = "ATTUNE_EXEC_ID";
    /// The action's ref, for example `core.echo`.
    ACTION = "ATTUNE_ACTION";
    /// The ref of the action's pack.
    PACK_REF = "ATTUNE_PACK_REF";
    /// The rule that requested the execution, if one did.
    RULE = "ATTUNE_RULE";
    /// The trigger of the event that requested the execution, if one did.
    TRIGGER = "ATTUNE_TRIGGER";
    /// `json`, `dotenv` or `yaml`: how the parameters are written.
    PARAMETER_FORMAT = "ATTUNE_PARAMETER_FORMAT";
    /// `stdin` or `file`: where the parameters are.
    PARAMETER_DELIVERY = "ATTUNE_PARAMETER_DELIVERY";
    /// The 0400 file that holds the parameters, when they are delivered in a
    /// file.
    PARAMETER_FILE = "ATTUNE_PARAMETER_FILE";
    /// Prefix of each non-secret parameter, also exported as a variable:
    /// `ATTUNE_<NAME>`, the parameter's name upper-cased.
    PARAMETER_PREFIX = "ATTUNE_";
}

group! {
    /// Knobs of the scripts and compose files (`docker/stack`,
    /// `docker/build-images`, `docker/publish`, `scripts/`, the Nix apps); no
    /// binary reads them.
    SCRIPT_VARS;
    /// `amd64` or `arm64`: the architecture of the images the stack runs and
    /// the scripts build (by default the Docker engine's, `scripts/host-arch
    /// --engine`, else this machine's).
    ARCH = "ATTUNE_ARCH";
    /// Tag of the local images that `docker/build-images` builds and the stack
    /// runs (by default `latest`).
    IMAGE_TAG = "ATTUNE_IMAGE_TAG";
    /// Host port the Docker stack publishes the api on (by default 8080).
    API_PORT = "ATTUNE_API_PORT";
    /// Host address the Docker stack publishes the api on (by default
    /// 127.0.0.1, this machine only; 0.0.0.0 for every interface).
    API_BIND = "ATTUNE_API_BIND";
    /// The image `worker-python` and the sensor service run the static agent
    /// in: any image with `python3` of the stack's architecture (by default
    /// `attune/runtime-python:<tag>`, Debian's python3.11 built by
    /// `docker/build-images`; for example `python:3.12-slim`).
    PYTHON_IMAGE = "ATTUNE_PYTHON_IMAGE";
    /// The image whose `attune-worker install-agent` fills the agent volume
    /// (by default `attune/agent:<tag>`; the Nix app gives its worker image).
    AGENT_IMAGE = "ATTUNE_AGENT_IMAGE";
    /// The pack sources the images and the packs-init container assemble (by
    /// default `packs/`).
    PACKS_SOURCE = "ATTUNE_PACKS_SOURCE";
    /// Host directory (or volume) the Docker stack mounts as the services'
    /// packs.dev (by default `packs.dev/`).
    PACKS_DEV = "ATTUNE_PACKS_DEV";
    /// `1`: `docker/build-images` and `tests/cross/run` build nothing and use
    /// the static binaries `scripts/build-pack-binaries` left in `target/`
    /// (CI sets it after its one build; a missing binary fails, named).
    PREBUILT = "ATTUNE_PREBUILT";
    /// The env file of `docker/stack`, which keeps the token and the
    /// distributable stack's images (by default `.env` at the repository's
    /// root, where `docker compose` reads it).
    ENV_FILE = "ATTUNE_ENV_FILE";
    /// `v2` or `v1`: the Docker Compose `docker/stack` must use (by default v2
    /// when present, else v1).
    COMPOSE = "ATTUNE_COMPOSE";
    /// The registry and prefix of the distributable stack, kept in the env
    /// file by `docker/stack up --registry`.
    REGISTRY = "ATTUNE_REGISTRY";
    /// Prefix of the image references of the distributable stack, one per
    /// published image, by digest: written by `docker/publish` and
    /// `docker/stack up --registry`.
    IMAGE_PREFIX = "ATTUNE_IMAGE_";
    /// The distributable stack's packs image (packs-init), by digest.
    IMAGE_PACKS = "ATTUNE_IMAGE_PACKS";
    /// The distributable stack's api image, by digest.
    IMAGE_API = "ATTUNE_IMAGE_API";
    /// The distributable stack's worker image, by digest.
    IMAGE_WORKER = "ATTUNE_IMAGE_WORKER";
    /// The distributable stack's sensor service image, by digest.
    IMAGE_SENSOR = "ATTUNE_IMAGE_SENSOR";
    /// Where `docker/publish` writes the image references it published (by
    /// default `docker/distributable/images.env`).
    PUBLISHED_ENV = "ATTUNE_PUBLISHED_ENV";
    /// The images `docker/publish` publishes (by default all of them).
    PUBLISH_NAMES = "ATTUNE_PUBLISH_NAMES";
}

/// Every group, in the order docs/reference.md's table lists them.
pub const GROUPS: &[Group] = &[SERVICE_VARS, SENSOR_VARS, ACTION_VARS, SCRIPT_VARS];

/// Every variable of every group.
pub fn all() -> impl Iterator<Item = &'static Var> {
    GROUPS.iter().flat_map(|g| g.vars)
}

/// Variables the worker sets for an action; a parameter of the same name is
/// not exported over them.
pub const ACTION_RUNTIME: &[&str] = &[
    EXEC_ID,
    ACTION,
    PACK_REF,
    API_URL,
    API_TOKEN,
    PARAMETER_FORMAT,
    PARAMETER_DELIVERY,
    PARAMETER_FILE,
    RULE,
    TRIGGER,
];

/// Default of [`PACKS_DIR`]: where the images mount the packs volume.
pub const DEFAULT_PACKS_DIR: &str = "/opt/attune/packs";
/// Default of [`PACKS_DEV_DIR`].
pub const DEFAULT_PACKS_DEV_DIR: &str = "/opt/attune/packs.dev";
/// Default of [`DB`].
pub const DEFAULT_DB: &str = "/opt/attune/data/attune.db";
/// Default of [`LOGS_DIR`].
pub const DEFAULT_LOGS_DIR: &str = "/opt/attune/logs";
/// Default of [`DRAIN_TIMEOUT`], in seconds: Docker's grace before SIGKILL
/// is 10 s too. Give a container a stop grace a few seconds longer than the
/// drain, so that what follows the deadline (the worker reporting an action it
/// killed) still happens.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "10";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_listed_once_and_documented() {
        let mut names: Vec<&str> = all().map(|v| v.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name is in two groups");
        for v in all() {
            assert!(v.name.starts_with("ATTUNE_"), "{}", v.name);
            assert!(
                v.name[1..]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{} is not a variable name",
                v.name
            );
            assert!(v.doc.trim().len() > 10, "{} has no documentation", v.name);
        }
        // The macro carries the constant's text into its group.
        let url = SERVICE_VARS
            .vars
            .iter()
            .find(|v| v.name == API_URL)
            .unwrap();
        assert!(url.doc.contains("API base URL"), "{}", url.doc);
        assert!(
            SENSOR_VARS.title.contains("sensor contract"),
            "{}",
            SENSOR_VARS.title
        );
    }

    #[test]
    fn the_action_runtime_names_are_documented_variables() {
        for name in ACTION_RUNTIME {
            assert!(all().any(|v| v.name == *name), "{name}");
        }
    }
}
