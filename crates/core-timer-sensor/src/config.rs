//! Configuration: Attune's sensor environment (or the same keys as one JSON
//! object on stdin). A missing or malformed setting names its key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Environment variable names, in one place.
pub mod keys {
    /// Base URL of the Attune API, `http://host:port`.
    pub const API_URL: &str = "ATTUNE_API_URL";
    /// Bearer token for the API.
    pub const API_TOKEN: &str = "ATTUNE_API_TOKEN";
    /// This sensor's ref, for example `core.timer_sensor`.
    pub const SENSOR_REF: &str = "ATTUNE_SENSOR_REF";
    /// JSON array of `{id, trigger_ref, config}`.
    pub const SENSOR_TRIGGERS: &str = "ATTUNE_SENSOR_TRIGGERS";
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub const LOG_LEVEL: &str = "ATTUNE_LOG_LEVEL";
    /// `human` (also `pretty`) or `json`.
    pub const LOG_FORMAT: &str = "ATTUNE_LOG_FORMAT";
    /// Seconds between rule reconciliations (0: never).
    pub const RECONCILE_SECONDS: &str = "ATTUNE_SENSOR_RECONCILE_SECONDS";
    /// Events held while the API is unreachable.
    pub const QUEUE_CAPACITY: &str = "ATTUNE_SENSOR_QUEUE_CAPACITY";
    /// A file where the events still unsent at any stop wait for the next
    /// start (set by the sensor service).
    pub const SPOOL: &str = "ATTUNE_SENSOR_SPOOL";
    /// Every key, for `--help` and stdin configuration.
    pub const ALL: &[&str] = &[
        API_URL,
        API_TOKEN,
        SENSOR_REF,
        SENSOR_TRIGGERS,
        LOG_LEVEL,
        LOG_FORMAT,
        RECONCILE_SECONDS,
        QUEUE_CAPACITY,
        SPOOL,
    ];
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Readable lines.
    Pretty,
}

/// One trigger instance as Attune hands it to the sensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerInstance {
    /// The rule id (a number or a string), used in `trigger_instance_id: rule_<id>`.
    pub id: String,
    /// `core.intervaltimer`, `core.crontimer` or `core.datetimetimer`; inferred from the config keys when absent.
    pub trigger_ref: Option<String>,
    /// The trigger parameters.
    pub config: Value,
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// API base URL without a trailing `/`.
    pub api_url: String,
    /// Bearer token.
    pub api_token: String,
    /// This sensor's ref.
    pub sensor_ref: String,
    /// Trigger instances to start with.
    pub triggers: Vec<TriggerInstance>,
    /// Maximum log level.
    pub log_level: tracing::Level,
    /// Log format.
    pub log_format: LogFormat,
    /// Reconciliation period; `None` disables it.
    pub reconcile: Option<Duration>,
    /// Queue capacity (events).
    pub queue_capacity: usize,
    /// Where unsent events are kept from one run to the next.
    pub spool: Option<std::path::PathBuf>,
}

/// A setting that is missing or malformed.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Reads the configuration from a key -> value lookup (the environment, or stdin's object).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let required = |key: &str| {
            get(key)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| err(key, "is not set"))
        };
        let api_url = required(keys::API_URL)?
            .trim()
            .trim_end_matches('/')
            .to_string();
        crate::http::Url::parse(&api_url).map_err(|m| err(keys::API_URL, m))?;
        let api_token = required(keys::API_TOKEN)?;
        let sensor_ref = get(keys::SENSOR_REF).unwrap_or_else(|| "core.timer_sensor".to_string());
        let triggers = match get(keys::SENSOR_TRIGGERS) {
            None => vec![],
            Some(text) if text.trim().is_empty() => vec![],
            Some(text) => parse_triggers(&text)?,
        };
        let log_level = match get(keys::LOG_LEVEL)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("info") => tracing::Level::INFO,
            Some("error") => tracing::Level::ERROR,
            Some("warn" | "warning") => tracing::Level::WARN,
            Some("debug") => tracing::Level::DEBUG,
            Some("trace") => tracing::Level::TRACE,
            Some(other) => {
                return Err(err(
                    keys::LOG_LEVEL,
                    format!("`{other}` is not one of error, warn, info, debug, trace"),
                ));
            }
        };
        let log_format = match get(keys::LOG_FORMAT).as_deref() {
            // `human` is what the other services and the README say; `pretty` is kept.
            None | Some("human") | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(
                    keys::LOG_FORMAT,
                    format!("`{other}` is not `human` or `json`"),
                ));
            }
        };
        let number = |key: &str, default: u64| -> Result<u64, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| err(key, format!("`{v}` is not a whole number"))),
            }
        };
        let reconcile = match number(keys::RECONCILE_SECONDS, 30)? {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let queue_capacity = number(keys::QUEUE_CAPACITY, 1000)?;
        if queue_capacity == 0 {
            return Err(err(keys::QUEUE_CAPACITY, "must be at least 1"));
        }
        Ok(Config {
            api_url,
            api_token,
            sensor_ref,
            triggers,
            log_level,
            log_format,
            reconcile,
            queue_capacity: queue_capacity as usize,
            spool: get(keys::SPOOL).filter(|s| !s.is_empty()).map(Into::into),
        })
    }

    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration from one JSON object with the same keys (values
    /// may be strings, numbers, or, for `ATTUNE_SENSOR_TRIGGERS`, an array).
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, Value> = serde_json::from_str(text)
            .map_err(|e| err("stdin", format!("is not a JSON object of settings: {e}")))?;
        if let Some(unknown) = map.keys().find(|k| !keys::ALL.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!("is not a setting; expected one of {}", keys::ALL.join(", ")),
            ));
        }
        Config::from_lookup(|k| {
            map.get(k).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
    }
}

/// Parses `ATTUNE_SENSOR_TRIGGERS`.
pub fn parse_triggers(text: &str) -> Result<Vec<TriggerInstance>, ConfigError> {
    let key = keys::SENSOR_TRIGGERS;
    let value: Value =
        serde_json::from_str(text).map_err(|e| err(key, format!("is not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(err(
            key,
            "must be a JSON array of {id, trigger_ref, config}",
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| trigger_instance(&item).map_err(|m| err(key, format!("entry {i}: {m}"))))
        .collect()
}

/// One `{id, trigger_ref, config}` object (also the shape of a rule from the API,
/// where the parameters are `trigger_params`).
pub fn trigger_instance(item: &Value) -> Result<TriggerInstance, String> {
    let id = match item.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("`id` must be a number or a non-empty string".into()),
    };
    let trigger_ref = match item.get("trigger_ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("`trigger_ref` must be a string".into()),
    };
    let config = item
        .get("config")
        .or_else(|| item.get("trigger_params"))
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    if !config.is_object() {
        return Err("`config` must be an object".into());
    }
    Ok(TriggerInstance {
        id,
        trigger_ref,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn minimal_configuration() {
        let c = Config::from_lookup(lookup(&[
            (keys::API_URL, "http://api:8080/"),
            (keys::API_TOKEN, "t"),
        ]))
        .unwrap();
        assert_eq!(c.api_url, "http://api:8080");
        assert_eq!(c.sensor_ref, "core.timer_sensor");
        assert_eq!(c.reconcile, Some(Duration::from_secs(30)));
        assert!(c.triggers.is_empty());
    }

    #[test]
    fn missing_and_malformed_settings_name_their_key() {
        let e = Config::from_lookup(lookup(&[(keys::API_TOKEN, "t")])).unwrap_err();
        assert_eq!(e.key, keys::API_URL);
        let e = Config::from_lookup(lookup(&[
            (keys::API_URL, "http://a"),
            (keys::API_TOKEN, "t"),
            (keys::SENSOR_TRIGGERS, "{"),
        ]))
        .unwrap_err();
        assert_eq!(e.key, keys::SENSOR_TRIGGERS);
        let e = Config::from_lookup(lookup(&[
            (keys::API_URL, "ftp://a"),
            (keys::API_TOKEN, "t"),
        ]))
        .unwrap_err();
        assert_eq!(e.key, keys::API_URL);
        let e = Config::from_lookup(lookup(&[
            (keys::API_URL, "http://a"),
            (keys::API_TOKEN, "t"),
            (keys::RECONCILE_SECONDS, "soon"),
        ]))
        .unwrap_err();
        assert_eq!(e.key, keys::RECONCILE_SECONDS);
    }

    /// The README documents `ATTUNE_LOG_FORMAT=human` for every service; the
    /// sensor alone refused it.
    #[test]
    fn log_format_human_is_accepted() {
        for (v, want) in [("human", LogFormat::Pretty), ("json", LogFormat::Json)] {
            let c = Config::from_lookup(lookup(&[
                (keys::API_URL, "http://a"),
                (keys::API_TOKEN, "t"),
                (keys::LOG_FORMAT, v),
            ]))
            .unwrap();
            assert_eq!(c.log_format, want);
        }
    }

    #[test]
    fn triggers_accept_numeric_and_string_ids() {
        let t = parse_triggers(r#"[{"id": 7, "trigger_ref": "core.intervaltimer", "config": {"interval": 5}}, {"id": "x", "config": {"fire_at": "2030-01-01T00:00:00Z"}}]"#).unwrap();
        assert_eq!(t[0].id, "7");
        assert_eq!(t[1].trigger_ref, None);
        let e = parse_triggers(r#"[{"config": {}}]"#).unwrap_err();
        assert!(
            e.message.contains("entry 0") && e.message.contains("`id`"),
            "{e}"
        );
    }

    #[test]
    fn stdin_json_uses_the_same_keys() {
        let c = Config::from_json(r#"{"ATTUNE_API_URL": "http://a", "ATTUNE_API_TOKEN": "t", "ATTUNE_SENSOR_TRIGGERS": [{"id": 1, "config": {"interval": 1}}], "ATTUNE_SENSOR_RECONCILE_SECONDS": 0}"#).unwrap();
        assert_eq!(c.triggers.len(), 1);
        assert_eq!(c.reconcile, None);
        let e = Config::from_json(r#"{"ATTUNE_API_URL": "http://a", "TOKEN": "t"}"#).unwrap_err();
        assert_eq!(e.key, "TOKEN");
    }
}
