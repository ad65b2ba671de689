//! Parameters of an execution, checked against the action's declared schema:
//! unknown names, missing required ones, wrong types, values outside `enum`,
//! and the JSON-Schema bounds `minimum`, `maximum`, `minLength`, `maxLength`,
//! `minItems`, `maxItems` and an array's `items.type` are refused naming the
//! field; defaults are filled in. Other keywords are carried, not checked.
//!
//! Whatever the schema says, every execution's parameters are bounded
//! ([`limits`]): each value nests at most [`MAX_DEPTH`] levels and all of them
//! take at most [`MAX_PARAMETERS_BYTES`] as JSON, so that every answer that
//! carries them (the worker's claim, `GET /executions`) can be read back.

use attune_pack::Action;
use serde_json::{Map, Value};

/// How deep a parameter's value (or an event's payload) may nest: arrays and
/// objects inside one another, a scalar being 0 and `[1]` 1.
///
/// Answers wrap parameters a few levels deeper (`{"data": {"parameters":
/// ...}}`, the claim's `{"execution": {"parameters": ...}}`), and serde_json,
/// the worker's parser, stops at 128 levels: the api once accepted 125 and
/// the worker could not read its own claim. Upstream's packs declare at most
/// one level (an object of strings, an array of objects of strings) and real
/// JSON bodies rarely pass ten, so 32 is far from both.
pub const MAX_DEPTH: usize = 32;

/// The most bytes an execution's parameters (after defaults, as compact JSON)
/// may take: 1 MiB.
///
/// Far above any upstream pack's parameters (a message, a URL, a request body)
/// and far below what a worker reads in one claim answer (10 MB), so a rule
/// that renders a large payload into several parameters cannot make a claim
/// unreadable either. The worker exports non-secret parameters as variables,
/// and 1 MiB also stays under Linux's 2 MiB for an action's whole environment.
pub const MAX_PARAMETERS_BYTES: usize = 1 << 20;

/// A parameter problem: the field and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The parameter name.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    }
}

/// How deeply `v` nests: 0 for a scalar, 1 for `[1]` or `{"a": 1}`.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Refuses a value, named `field`, that nests deeper than [`MAX_DEPTH`].
pub fn check_depth(field: &str, v: &Value) -> Result<(), Invalid> {
    let d = depth(v);
    if d > MAX_DEPTH {
        return Err(Invalid {
            field: field.into(),
            message: format!(
                "nests {d} levels deep; the limit is {MAX_DEPTH} levels (arrays and objects inside one another)"
            ),
        });
    }
    Ok(())
}

/// The bounds of every execution's parameters, whatever its action declares:
/// each value at most [`MAX_DEPTH`] deep, all of them at most
/// [`MAX_PARAMETERS_BYTES`] as JSON. Checked when an execution is requested
/// and again when it is claimed (rows written before these limits).
pub fn limits(parameters: &Value) -> Result<(), Invalid> {
    match parameters {
        Value::Object(m) => {
            for (name, v) in m {
                check_depth(name, v)?;
            }
        }
        other => check_depth("parameters", other)?,
    }
    let size = serde_json::to_vec(parameters).map_or(usize::MAX, |b| b.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(Invalid {
            field: "parameters".into(),
            message: format!(
                "take {size} bytes as JSON; the limit is {MAX_PARAMETERS_BYTES} bytes (1 MiB) for all of an execution's parameters"
            ),
        });
    }
    Ok(())
}

/// The parameters with defaults applied, or the first problem; within
/// [`limits`].
pub fn check(action: &Action, given: &Value) -> Result<Value, Invalid> {
    let given = match given {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => {
            return Err(Invalid {
                field: "parameters".into(),
                message: "must be a JSON object".into(),
            });
        }
    };
    if let Some(unknown) = given.keys().find(|k| !action.parameters.contains_key(*k)) {
        let known: Vec<&str> = action.parameters.keys().map(String::as_str).collect();
        return Err(Invalid {
            field: unknown.clone(),
            message: format!(
                "is not a parameter of {}; it takes: {}",
                action.action_ref,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        });
    }
    let mut out = Map::new();
    for (name, p) in &action.parameters {
        let value = match given.get(name) {
            Some(v) => v.clone(),
            None => match &p.default {
                Some(d) => d.clone(),
                None if p.required => {
                    return Err(Invalid {
                        field: name.clone(),
                        message: "is required".into(),
                    });
                }
                None => continue,
            },
        };
        if let Some(t) = &p.param_type
            && !type_ok(t, &value)
        {
            return Err(Invalid {
                field: name.clone(),
                message: format!("must be of type {t}, got {value}"),
            });
        }
        if let Some(allowed) = &p.allowed
            && !allowed.contains(&value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(Invalid {
                field: name.clone(),
                message: format!("must be one of {}, got {value}", list.join(", ")),
            });
        }
        if let Some(problem) = bounds(&p.schema, &value) {
            return Err(Invalid {
                field: name.clone(),
                message: problem,
            });
        }
        out.insert(name.clone(), value);
    }
    let out = Value::Object(out);
    limits(&out)?;
    Ok(out)
}

/// The first JSON-Schema bound `value` breaks, if any.
fn bounds(schema: &std::collections::BTreeMap<String, Value>, value: &Value) -> Option<String> {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let len = |k: &str| schema.get(k).and_then(Value::as_u64);
    if let Some(x) = value.as_f64() {
        if let Some(min) = num("minimum").filter(|m| x < *m) {
            return Some(format!("must be at least {min}, got {value}"));
        }
        if let Some(max) = num("maximum").filter(|m| x > *m) {
            return Some(format!("must be at most {max}, got {value}"));
        }
    }
    if let Some(s) = value.as_str() {
        let n = s.chars().count() as u64;
        if let Some(min) = len("minLength").filter(|m| n < *m) {
            return Some(format!("must be at least {min} characters long"));
        }
        if let Some(max) = len("maxLength").filter(|m| n > *m) {
            return Some(format!("must be at most {max} characters long"));
        }
    }
    if let Some(a) = value.as_array() {
        let n = a.len() as u64;
        if let Some(min) = len("minItems").filter(|m| n < *m) {
            return Some(format!("must have at least {min} items"));
        }
        if let Some(max) = len("maxItems").filter(|m| n > *m) {
            return Some(format!("must have at most {max} items"));
        }
        if let Some(t) = schema
            .get("items")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            && let Some((i, bad)) = a.iter().enumerate().find(|(_, v)| !type_ok(t, v))
        {
            return Some(format!("item {i} must be of type {t}, got {bad}"));
        }
    }
    None
}

/// Splits checked parameters into what may be stored and shown (secret values
/// replaced by [`crate::store::REDACTED`]) and an object of the secret ones.
pub fn split_secrets(action: &Action, checked: &Value) -> (Value, Option<Value>) {
    let Value::Object(all) = checked else {
        return (checked.clone(), None);
    };
    let mut public = all.clone();
    let mut secrets = Map::new();
    for (name, value) in all {
        if action.parameters.get(name).is_some_and(|p| p.secret) {
            secrets.insert(name.clone(), value.clone());
            public.insert(name.clone(), Value::from(crate::store::REDACTED));
        }
    }
    let secrets = (!secrets.is_empty()).then_some(Value::Object(secrets));
    (Value::Object(public), secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_schema_bounds_are_checked() {
        let a: Action = serde_saphyr::from_str(
            "ref: p.a\nentry_point: a.sh\nparameters:\n  n: {type: integer, minimum: 0, maximum: 255}\n  tags: {type: array, items: {type: string}, minItems: 1}\n  s: {type: string, maxLength: 3}\n",
        )
        .unwrap();
        assert!(check(&a, &json!({"n": 3, "tags": ["x"], "s": "abc"})).is_ok());
        let bad = |v: Value| check(&a, &v).unwrap_err();
        assert_eq!(bad(json!({"n": 256})).field, "n");
        assert!(bad(json!({"n": -1})).message.contains("at least 0"));
        assert!(
            bad(json!({"tags": []}))
                .message
                .contains("at least 1 items")
        );
        assert!(bad(json!({"tags": [1]})).message.contains("item 0"));
        assert!(bad(json!({"s": "abcd"})).message.contains("at most 3"));
    }

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!("x"), |v, _| json!([v]))
    }

    /// The api accepted parameters nested 125 levels deep; the claim wrapped
    /// them past serde_json's 128 and the worker could not read it.
    #[test]
    fn parameters_nest_at_most_max_depth_levels() {
        let a: Action = serde_saphyr::from_str(
            "ref: p.a\nentry_point: a.sh\nparameters:\n  data: {type: array}\n",
        )
        .unwrap();
        assert_eq!(depth(&nested(MAX_DEPTH)), MAX_DEPTH);
        assert!(check(&a, &json!({"data": nested(MAX_DEPTH)})).is_ok());
        let e = check(&a, &json!({"data": nested(125)})).unwrap_err();
        assert_eq!(e.field, "data");
        assert!(
            e.message.contains("nests 125 levels") && e.message.contains("limit is 32"),
            "{}",
            e.message
        );
    }

    /// A megabyte-sized parameter went into the claim unbounded.
    #[test]
    fn parameters_take_at_most_max_parameters_bytes() {
        let big = json!({"message": "m".repeat(MAX_PARAMETERS_BYTES)});
        let e = limits(&big).unwrap_err();
        assert_eq!(e.field, "parameters");
        assert!(
            e.message
                .contains(&format!("limit is {MAX_PARAMETERS_BYTES} bytes")),
            "{}",
            e.message
        );
        assert!(limits(&json!({"message": "m".repeat(100_000)})).is_ok());
    }

    fn action() -> Action {
        serde_saphyr::from_str(
            "ref: p.a\nlabel: A\nrunner_type: shell\nentry_point: a.sh\nparameters:\n  message: {type: string, default: hi}\n  count: {type: integer, required: true}\n  mode: {type: string, enum: [fast, slow]}\n",
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_refusals() {
        let a = action();
        assert_eq!(
            check(&a, &json!({"count": 2})).unwrap(),
            json!({"message": "hi", "count": 2})
        );
        assert_eq!(check(&a, &json!({})).unwrap_err().field, "count");
        assert!(
            check(&a, &json!({"count": "2"}))
                .unwrap_err()
                .message
                .contains("integer")
        );
        assert!(
            check(&a, &json!({"count": 1, "mode": "medium"}))
                .unwrap_err()
                .message
                .contains("one of")
        );
        let e = check(&a, &json!({"count": 1, "colour": "red"})).unwrap_err();
        assert_eq!(e.field, "colour");
        assert!(e.message.contains("count, message, mode"), "{}", e.message);
    }
}
