//! Parameters of an execution, checked against the action's declared schema:
//! unknown names, missing required ones, wrong types, values outside `enum`,
//! and the JSON-Schema bounds `minimum`, `maximum`, `minLength`, `maxLength`,
//! `minItems`, `maxItems` and an array's `items.type` are refused naming the
//! field; defaults are filled in. Other keywords are carried, not checked.

use attune_pack::Action;
use serde_json::{Map, Value};

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

/// The parameters with defaults applied, or the first problem.
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
    Ok(Value::Object(out))
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
