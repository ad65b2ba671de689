//! Configuration: Attune's sensor environment (or the same keys as one JSON
//! object on stdin). A missing or malformed setting names its key. The names
//! and the log settings' values are `attune-contract`'s, as for every binary.

use std::collections::BTreeMap;
use std::time::Duration;

use attune_contract::{LogFormat, LogLevel, Setting, env};
use serde_json::Value;

/// Every setting this sensor reads, for `--help` and stdin configuration.
pub const KEYS: &[&str] = &[
    env::API_URL,
    env::API_TOKEN,
    env::SENSOR_REF,
    env::SENSOR_TRIGGERS,
    env::LOG_LEVEL,
    env::LOG_FORMAT,
    env::SENSOR_RECONCILE_SECONDS,
    env::SENSOR_QUEUE_CAPACITY,
    env::SENSOR_SPOOL,
];

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
    pub log_level: LogLevel,
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
        let api_url = required(env::API_URL)?
            .trim()
            .trim_end_matches('/')
            .to_string();
        crate::http::Url::parse(&api_url).map_err(|m| err(env::API_URL, m))?;
        let api_token = required(env::API_TOKEN)?;
        let sensor_ref = get(env::SENSOR_REF).unwrap_or_else(|| "core.timer_sensor".to_string());
        let triggers = match get(env::SENSOR_TRIGGERS) {
            None => vec![],
            Some(text) if text.trim().is_empty() => vec![],
            Some(text) => parse_triggers(&text)?,
        };
        let log_level = setting(&get, env::LOG_LEVEL, LogLevel::Info)?;
        let log_format = setting(&get, env::LOG_FORMAT, LogFormat::Human)?;
        let number = |key: &str, default: u64| -> Result<u64, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| err(key, format!("`{v}` is not a whole number"))),
            }
        };
        let reconcile = match number(env::SENSOR_RECONCILE_SECONDS, 30)? {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let queue_capacity = number(env::SENSOR_QUEUE_CAPACITY, 1000)?;
        if queue_capacity == 0 {
            return Err(err(env::SENSOR_QUEUE_CAPACITY, "must be at least 1"));
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
            spool: get(env::SENSOR_SPOOL)
                .filter(|s| !s.is_empty())
                .map(Into::into),
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
        if let Some(unknown) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!("is not a setting; expected one of {}", KEYS.join(", ")),
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

/// A log setting, parsed by the one parser every binary uses (attune-contract).
fn setting<T: Setting>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: T,
) -> Result<T, ConfigError> {
    get(key).map_or(Ok(default), |v| {
        attune_contract::log::parse(&v).map_err(|e| err(key, e.to_string()))
    })
}

/// Parses `ATTUNE_SENSOR_TRIGGERS`.
pub fn parse_triggers(text: &str) -> Result<Vec<TriggerInstance>, ConfigError> {
    let key = env::SENSOR_TRIGGERS;
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
            (env::API_URL, "http://api:8080/"),
            (env::API_TOKEN, "t"),
        ]))
        .unwrap();
        assert_eq!(c.api_url, "http://api:8080");
        assert_eq!(c.sensor_ref, "core.timer_sensor");
        assert_eq!(c.reconcile, Some(Duration::from_secs(30)));
        assert!(c.triggers.is_empty());
    }

    #[test]
    fn missing_and_malformed_settings_name_their_key() {
        let e = Config::from_lookup(lookup(&[(env::API_TOKEN, "t")])).unwrap_err();
        assert_eq!(e.key, env::API_URL);
        let e = Config::from_lookup(lookup(&[
            (env::API_URL, "http://a"),
            (env::API_TOKEN, "t"),
            (env::SENSOR_TRIGGERS, "{"),
        ]))
        .unwrap_err();
        assert_eq!(e.key, env::SENSOR_TRIGGERS);
        let e = Config::from_lookup(lookup(&[(env::API_URL, "ftp://a"), (env::API_TOKEN, "t")]))
            .unwrap_err();
        assert_eq!(e.key, env::API_URL);
        let e = Config::from_lookup(lookup(&[
            (env::API_URL, "http://a"),
            (env::API_TOKEN, "t"),
            (env::SENSOR_RECONCILE_SECONDS, "soon"),
        ]))
        .unwrap_err();
        assert_eq!(e.key, env::SENSOR_RECONCILE_SECONDS);
    }

    /// The README documents `ATTUNE_LOG_FORMAT=human` for every service; the
    /// sensor alone refused it.
    #[test]
    fn log_format_human_is_accepted() {
        for (v, want) in [("human", LogFormat::Human), ("json", LogFormat::Json)] {
            let c = Config::from_lookup(lookup(&[
                (env::API_URL, "http://a"),
                (env::API_TOKEN, "t"),
                (env::LOG_FORMAT, v),
            ]))
            .unwrap();
            assert_eq!(c.log_format, want);
        }
    }

    /// Every spelling the services and packs-assemble take, and nothing else.
    #[test]
    fn log_settings_take_every_spelling_the_other_binaries_take() {
        let with = |key: &str, v: &str| {
            Config::from_lookup(lookup(&[
                (env::API_URL, "http://a"),
                (env::API_TOKEN, "t"),
                (key, v),
            ]))
        };
        for (v, want) in LogFormat::VALUES {
            assert_eq!(with(env::LOG_FORMAT, v).unwrap().log_format, *want);
        }
        for (v, want) in LogLevel::VALUES {
            assert_eq!(with(env::LOG_LEVEL, v).unwrap().log_level, *want);
        }
        let e = with(env::LOG_LEVEL, "loud").unwrap_err();
        assert_eq!(e.key, env::LOG_LEVEL);
        assert!(e.message.contains("`loud` is not one of error,"), "{e}");
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
