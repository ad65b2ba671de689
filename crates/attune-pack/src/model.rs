//! The pack model: the typed contents of `pack.yaml` and of each component file.
//!
//! Field names are Attune's. Every struct rejects unknown fields, so a typo such
//! as `entrypoint:` is reported with its line instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `pack.yaml`: the pack's identity and configuration schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    /// The pack ref, `^[a-z][a-z0-9_-]*$`; also the pack's directory name.
    #[serde(rename = "ref")]
    pub pack_ref: String,
    /// Human-readable name.
    pub label: String,
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
}

/// How an action or sensor is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerType {
    /// A shell script, run by the interpreter named in its shebang (`/bin/sh` otherwise).
    Shell,
    /// A Python script, run by `python3`.
    Python,
    /// A native executable (a static ELF, or a script with a shebang), exec'd directly.
    Native,
}

impl RunnerType {
    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::Shell => "shell",
            RunnerType::Python => "python",
            RunnerType::Native => "native",
        }
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
    /// Parsed as JSON into the execution's result.
    Json,
}

/// One declared parameter of an action or sensor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// The JSON types a parameter may declare.
pub const PARAMETER_TYPES: &[&str] = &["string", "integer", "number", "boolean", "object", "array"];

/// `actions/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub action_ref: String,
    /// Human-readable name.
    pub label: String,
    /// What the action does.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the action may run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How the entry point is started.
    pub runner_type: RunnerType,
    /// The file to run, relative to `actions/`.
    pub entry_point: String,
    /// Declared parameters, by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
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

/// `sensors/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub sensor_ref: String,
    /// Human-readable name.
    pub label: String,
    /// What the sensor watches.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the sensor runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How the entry point is started.
    pub runner_type: RunnerType,
    /// The file to run, relative to `sensors/`.
    pub entry_point: String,
    /// The trigger refs this sensor emits.
    pub trigger_types: Vec<String>,
    /// Declared parameters, by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
}

/// `triggers/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub trigger_ref: String,
    /// Human-readable name.
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
}

/// `rules/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub rule_ref: String,
    /// Human-readable name.
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
    /// Parameters for the action; strings may contain `{{ trigger.payload.<field> }}`.
    #[serde(default)]
    pub action_params: BTreeMap<String, Value>,
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
