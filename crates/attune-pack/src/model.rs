//! The pack model: the typed contents of `pack.yaml` and of each component file.
//!
//! Field names are upstream Attune's (AndroxxTraxxon/attune,
//! `crates/common/src/pack_registry/loader.rs`), and every key upstream reads
//! is modelled. Like upstream, the model is lenient: a key it does not know is
//! not a refusal. The loader reports each one as a warning naming its line
//! (so a typo such as `entrypoint:` is still seen), using the key lists of
//! [`Known`]; `--strict` makes those warnings errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The top-level keys a YAML kind knows; any other is warned about.
pub trait Known {
    /// Every key upstream Attune reads for this kind (and ours).
    const KEYS: &'static [&'static str];
}

/// `pack.yaml`: the pack's identity and configuration schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackMeta {
    /// The pack ref, `^[a-z][a-z0-9_-]*$`; also the pack's directory name.
    #[serde(rename = "ref")]
    pub pack_ref: String,
    /// Human-readable name (upstream falls back to `name`, then the ref).
    #[serde(default)]
    pub label: String,
    /// An older spelling of the label, read by upstream's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the pack is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Semantic version (`MAJOR.MINOR.PATCH[-pre][+build]`).
    pub version: String,
    /// Author's name.
    #[serde(default)]
    pub author: Option<String>,
    /// Author's e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether the pack's components are active.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// JSON schema of the pack configuration.
    #[serde(default)]
    pub conf_schema: Option<Value>,
    /// Default configuration values.
    #[serde(default)]
    pub config: Option<Value>,
    /// Runtime dependencies (for example Python requirements), informational.
    #[serde(default)]
    pub runtime_deps: Vec<String>,
    /// Packs this pack needs (`<ref>` or `<ref>@<constraint>`), informational.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// A pack shipped with Attune itself.
    #[serde(default)]
    pub system: bool,
    /// A standard pack of the registry.
    #[serde(default)]
    pub is_standard: bool,
    /// Free-form metadata (`category`, `keywords`, `python_dependencies`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// The registry's spelling of `meta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The registry's spelling of `tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// The registry's spelling of `conf_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<Value>,
    /// How upstream's pack test framework runs the pack's tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testing: Option<Value>,
}

impl Known for PackMeta {
    const KEYS: &'static [&'static str] = &[
        "ref",
        "label",
        "name",
        "description",
        "version",
        "author",
        "email",
        "tags",
        "keywords",
        "enabled",
        "conf_schema",
        "config_schema",
        "config",
        "runtime_deps",
        "dependencies",
        "system",
        "is_standard",
        "meta",
        "metadata",
        "testing",
    ];
}

/// How an action or sensor is started. Upstream's aliases and runtime refs
/// are accepted: `shell`, `bash`, `sh`, `core.shell`; `python`, `python3`,
/// `core.python`; `node`, `nodejs`, `node.js`, `core.nodejs`; `native`,
/// `builtin`, `standalone`, `core.native`. Any other runtime (a pack's own
/// `runtimes/*.yaml`) is [`RunnerType::Other`]: carried, warned about, and
/// not run by this project's worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RunnerType {
    /// A shell script, run by bash.
    #[default]
    Shell,
    /// A Python script, run by `python3`.
    Python,
    /// A Node.js script, run by `node`.
    Node,
    /// A native executable (a static ELF, or a script with a shebang), exec'd directly.
    Native,
    /// A runtime this project does not run.
    Other,
}

impl RunnerType {
    /// The canonical name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::Shell => "shell",
            RunnerType::Python => "python",
            RunnerType::Node => "node",
            RunnerType::Native => "native",
            RunnerType::Other => "other",
        }
    }

    /// The program that runs the entry point `path`, and its arguments; `None`
    /// for a runtime this project does not run. Shell scripts run with bash,
    /// as upstream runs them (`/bin/sh` only where no bash is installed).
    pub fn command_line(
        self,
        path: &std::path::Path,
    ) -> Option<(std::path::PathBuf, Vec<std::path::PathBuf>)> {
        let with = |program: &str| Some((program.into(), vec![path.to_path_buf()]));
        match self {
            RunnerType::Native => Some((path.to_path_buf(), vec![])),
            RunnerType::Python => with("python3"),
            RunnerType::Node => with("node"),
            RunnerType::Shell if std::path::Path::new("/bin/bash").exists() => with("/bin/bash"),
            RunnerType::Shell => with("/bin/sh"),
            RunnerType::Other => None,
        }
    }

    /// Reads a runner type or runtime ref as upstream does (case-insensitive).
    pub fn parse(s: &str) -> RunnerType {
        match s.trim().to_ascii_lowercase().as_str() {
            "shell" | "bash" | "sh" | "core.shell" => RunnerType::Shell,
            "python" | "python3" | "core.python" => RunnerType::Python,
            "node" | "nodejs" | "node.js" | "core.nodejs" => RunnerType::Node,
            "native" | "builtin" | "standalone" | "core.native" => RunnerType::Native,
            _ => RunnerType::Other,
        }
    }
}

impl Serialize for RunnerType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunnerType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| RunnerType::parse(&s))
    }
}

/// How an action receives its parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterDelivery {
    /// On standard input.
    #[default]
    Stdin,
    /// In a file named by `ATTUNE_PARAMETER_FILE`.
    File,
}

/// The encoding of delivered parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterFormat {
    /// One JSON object.
    #[default]
    Json,
    /// `KEY=value` lines.
    Dotenv,
    /// One YAML mapping.
    Yaml,
}

/// How an action's standard output is interpreted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Kept as text.
    #[default]
    Text,
    /// Parsed as JSON into the execution's result (the whole output, else its last line).
    Json,
    /// Parsed as YAML into the result.
    Yaml,
    /// One JSON value per line; the result is their array.
    Jsonl,
}

/// One declared parameter of an action or sensor, in the flat StackStorm
/// style upstream uses. Any other JSON-Schema keyword (`items`, `minimum`,
/// `pattern`, ...) is kept in `schema`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// JSON type: `string`, `integer`, `number`, `boolean`, `object` or `array`.
    #[serde(rename = "type", default)]
    pub param_type: Option<String>,
    /// What the parameter means.
    #[serde(default)]
    pub description: Option<String>,
    /// Value used when the caller gives none.
    #[serde(default)]
    pub default: Option<Value>,
    /// The allowed values, if restricted.
    #[serde(rename = "enum", default)]
    pub allowed: Option<Vec<Value>>,
    /// Whether the caller must give it.
    #[serde(default)]
    pub required: bool,
    /// Secret parameters are never exported as environment variables.
    #[serde(default)]
    pub secret: bool,
    /// Every other JSON-Schema keyword, as written.
    #[serde(flatten)]
    pub schema: BTreeMap<String, Value>,
}

/// Reads `parameters` in either form upstream accepts: flat
/// `{name: {type, ...}}`, or a full JSON Schema
/// `{type: object, properties: {...}, required: [...]}`.
fn parameters_schema<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Parameter>, D::Error> {
    use serde::de::Error;
    let v = Option::<Value>::deserialize(d)?.unwrap_or(Value::Null);
    let full = v.get("type").and_then(Value::as_str) == Some("object")
        && v.get("properties").is_some_and(Value::is_object);
    if !full {
        return match v {
            Value::Null => Ok(BTreeMap::new()),
            other => serde_json::from_value(other).map_err(D::Error::custom),
        };
    }
    let required: Vec<&str> = v
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, spec) in v["properties"].as_object().into_iter().flatten() {
        let mut p: Parameter = serde_json::from_value(spec.clone()).map_err(D::Error::custom)?;
        p.required |= required.contains(&name.as_str());
        out.insert(name.clone(), p);
    }
    Ok(out)
}

/// The JSON types a parameter may declare.
pub const PARAMETER_TYPES: &[&str] = &["string", "integer", "number", "boolean", "object", "array"];

/// `actions/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub action_ref: String,
    /// Human-readable name (upstream derives one from the ref when absent).
    #[serde(default)]
    pub label: String,
    /// What the action does.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the action may run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How the entry point is started (`shell` when absent, as upstream).
    #[serde(default)]
    pub runner_type: RunnerType,
    /// The file to run, relative to `actions/` (empty for a workflow action).
    #[serde(default)]
    pub entry_point: String,
    /// A workflow definition, relative to `actions/`: upstream's executor runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_file: Option<String>,
    /// Declared parameters, by name.
    #[serde(default, deserialize_with = "parameters_schema")]
    pub parameters: BTreeMap<String, Parameter>,
    /// JSON schema of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Another spelling of `output`, in upstream's packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where parameters are delivered.
    #[serde(default)]
    pub parameter_delivery: ParameterDelivery,
    /// How parameters are encoded.
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    /// How standard output is interpreted.
    #[serde(default)]
    pub output_format: OutputFormat,
    /// Seconds before the run is killed.
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl Known for Action {
    const KEYS: &'static [&'static str] = &[
        "ref",
        "label",
        "description",
        "enabled",
        "runner_type",
        "entry_point",
        "workflow_file",
        "parameters",
        "output",
        "output_schema",
        "tags",
        "parameter_delivery",
        "parameter_format",
        "output_format",
        "timeout",
        // Read by upstream for its scheduler and storage; carried, not used here.
        "runtime_version",
        "required_worker_runtimes",
        "worker_selector",
        "worker_tolerations",
        "worker_affinity",
        "accesses_mcp",
        "default_execution_permission_set_refs",
        "log_retention_policy",
        "log_retention_limit",
        "artifact_retention_policy",
        "artifact_retention_limit",
    ];
}

/// `sensors/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub sensor_ref: String,
    /// Human-readable name.
    #[serde(default)]
    pub label: String,
    /// What the sensor watches.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the sensor runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How the entry point is started.
    #[serde(default)]
    pub runner_type: RunnerType,
    /// The file to run, relative to `sensors/`.
    pub entry_point: String,
    /// The trigger refs this sensor emits (upstream also reads one `trigger_type`,
    /// which the loader merges in here).
    #[serde(default)]
    pub trigger_types: Vec<String>,
    /// A single trigger ref, upstream's other spelling.
    #[serde(default, skip_serializing)]
    pub trigger_type: Option<String>,
    /// Declared parameters, by name.
    #[serde(default, deserialize_with = "parameters_schema")]
    pub parameters: BTreeMap<String, Parameter>,
    /// Configuration values given to the sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Seconds between polls, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Value>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Known for Sensor {
    const KEYS: &'static [&'static str] = &[
        "ref",
        "label",
        "description",
        "enabled",
        "runner_type",
        "entry_point",
        "trigger_types",
        "trigger_type",
        "parameters",
        "config",
        "poll_interval",
        "tags",
        "meta",
        "examples",
        "runtime_version",
        "worker_selector",
        "worker_tolerations",
        "worker_affinity",
        "log_retention_policy",
        "log_retention_limit",
        "artifact_retention_policy",
        "artifact_retention_limit",
    ];
}

/// `triggers/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub trigger_ref: String,
    /// Human-readable name.
    #[serde(default)]
    pub label: String,
    /// What fires it.
    #[serde(default)]
    pub description: Option<String>,
    /// A free-form kind, for example `timer` or `webhook`.
    #[serde(rename = "type", default)]
    pub trigger_type: Option<String>,
    /// JSON schema of the trigger's parameters (given by rules).
    #[serde(default)]
    pub parameters: Option<Value>,
    /// JSON schema of the event payload.
    #[serde(default)]
    pub output: Option<Value>,
    /// Whether rules may use it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Known for Trigger {
    const KEYS: &'static [&'static str] = &[
        "ref",
        "label",
        "description",
        "type",
        "enabled",
        "parameters",
        "output",
        "tags",
        "examples",
        "meta",
    ];
}

/// `rules/<name>.yaml`. A bare ref (`every_second`) means one in the rule's
/// own pack, as upstream qualifies it; the loader writes it out in full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub rule_ref: String,
    /// Human-readable name.
    #[serde(default)]
    pub label: String,
    /// What the rule automates.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the rule matches events.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The trigger whose events it matches.
    pub trigger_ref: String,
    /// Parameters of the trigger instance (for timers: the schedule).
    #[serde(default)]
    pub trigger_params: BTreeMap<String, Value>,
    /// Optional conditions on the payload.
    #[serde(default)]
    pub conditions: Option<Value>,
    /// The action it runs.
    pub action_ref: String,
    /// Parameters for the action; strings may contain `{{ event.payload.<field> }}`.
    #[serde(default)]
    pub action_params: BTreeMap<String, Value>,
    /// The pack, as upstream's exported rules name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_ref: Option<String>,
    /// Permission sets the rule's executions run with (upstream's RBAC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permission_set_refs: Vec<String>,
}

impl Known for Rule {
    const KEYS: &'static [&'static str] = &[
        "ref",
        "label",
        "description",
        "enabled",
        "trigger_ref",
        "trigger_params",
        "conditions",
        "action_ref",
        "action_params",
        "pack_ref",
        "permission_set_refs",
        "permission_set_ref",
    ];
}

/// A component together with the file it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Loaded<T> {
    /// The YAML file, as found under the pack directory.
    pub file: PathBuf,
    /// Its contents.
    #[serde(flatten)]
    pub spec: T,
}

/// A whole pack, loaded and validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pack {
    /// The pack directory.
    pub dir: PathBuf,
    /// `pack.yaml`.
    pub meta: PackMeta,
    /// `actions/*.yaml`, sorted by file name.
    pub actions: Vec<Loaded<Action>>,
    /// `sensors/*.yaml`, sorted by file name.
    pub sensors: Vec<Loaded<Sensor>>,
    /// `triggers/*.yaml`, sorted by file name.
    pub triggers: Vec<Loaded<Trigger>>,
    /// `rules/*.yaml`, sorted by file name.
    pub rules: Vec<Loaded<Rule>>,
}

fn yes() -> bool {
    true
}
