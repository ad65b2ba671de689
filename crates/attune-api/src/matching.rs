//! Events to executions, as upstream's executor does
//! (`crates/executor/src/event_processor.rs`): a rule's `conditions` decide
//! whether an event matches, and its `action_params` are rendered from
//! `{{ event.payload.<field> }}`, `{{ event.id }}`, `{{ event.trigger }}`,
//! `{{ event.created }}` and `{{ pack.config.<key> }}`. The older
//! `{{ trigger.payload.<field> }}` still renders (the registry warns that it
//! is deprecated).

use serde_json::{Map, Value, json};

/// What templates and conditions can name.
#[derive(Clone, Debug)]
pub struct Context {
    /// `{id, trigger, trigger_ref, payload, created}`.
    pub event: Value,
    /// The rule's pack's `config`.
    pub pack_config: Value,
}

impl Context {
    /// The context of an event.
    pub fn new(
        id: i64,
        trigger_ref: &str,
        payload: &Value,
        created: &str,
        pack_config: Option<&Value>,
    ) -> Context {
        Context {
            event: json!({"id": id, "trigger": trigger_ref, "trigger_ref": trigger_ref, "payload": payload, "created": created}),
            pack_config: pack_config.cloned().unwrap_or(Value::Null),
        }
    }
}

/// The rule id that a timer instance names (`rule_<id>`), if any.
pub fn instance_rule(trigger_instance_id: Option<&str>) -> Option<&str> {
    trigger_instance_id?.strip_prefix("rule_")
}

/// `v` at the dotted `path` (array elements by index).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = v;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The value a template expression names.
fn lookup<'a>(expr: &str, ctx: &'a Context) -> Option<&'a Value> {
    let expr = expr.trim();
    if let Some(path) = expr.strip_prefix("event.") {
        at(&ctx.event, path)
    } else if let Some(path) = expr.strip_prefix("pack.config.") {
        at(&ctx.pack_config, path)
    } else if let Some(path) = expr.strip_prefix("trigger.payload") {
        at(&ctx.event["payload"], path)
    } else {
        None
    }
}

fn render_str(s: &str, payload: &Context) -> Value {
    // A string that is exactly one expression keeps the value's JSON type.
    let t = s.trim();
    if let Some(inner) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
        && !inner.contains("{{")
        && let Some(v) = lookup(inner, payload)
    {
        return v.clone();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let expr = &rest[start + 2..start + len];
        match lookup(expr, payload) {
            Some(Value::String(v)) => out.push_str(v),
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Value::String(out)
}

/// Renders every string in `params` against the event.
pub fn render(params: &Value, payload: &Context) -> Value {
    match params {
        Value::String(s) => render_str(s, payload),
        Value::Array(a) => Value::Array(a.iter().map(|v| render(v, payload)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), render(v, payload)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

/// Whether `conditions` hold for the event, as upstream evaluates them: none
/// (null, `{}`, `[]`) or an event without payload match; an array of
/// `{field, operator, value}` (field a dotted path in the payload; operators
/// `equals`, `not_equals`, `contains` on strings) must all hold; the
/// `{expression: "..."}` form supports `<path>`, `<path> == <json>` and
/// `<path> != <json>` over `event.*` and `pack.config.*`. An error says why
/// the rule cannot be evaluated (upstream then does not fire it either).
pub fn conditions_hold(conditions: Option<&Value>, ctx: &Context) -> Result<bool, String> {
    let Some(conditions) = conditions else {
        return Ok(true);
    };
    let payload = &ctx.event["payload"];
    let empty = conditions.is_null()
        || conditions.as_object().is_some_and(Map::is_empty)
        || conditions.as_array().is_some_and(Vec::is_empty);
    if empty || payload.is_null() {
        return Ok(true);
    }
    if let Some(expr) = conditions.get("expression") {
        let expr = expr
            .as_str()
            .ok_or("`conditions.expression` is not a string")?;
        return expression(expr, ctx);
    }
    let list = conditions
        .as_array()
        .ok_or("`conditions` is neither an array of {field, operator, value} nor {expression}")?;
    for (i, c) in list.iter().enumerate() {
        let field = c["field"]
            .as_str()
            .ok_or(format!("condition {i} has no `field`"))?;
        let operator = c["operator"]
            .as_str()
            .ok_or(format!("condition {i} has no `operator`"))?;
        let value = &c["value"];
        let found = at(payload, field).ok_or(format!(
            "condition {i}: field `{field}` is not in the payload"
        ))?;
        let holds = match operator {
            "equals" => found == value,
            "not_equals" => found != value,
            "contains" => match (found.as_str(), value.as_str()) {
                (Some(h), Some(n)) => h.contains(n),
                _ => false,
            },
            other => {
                return Err(format!(
                    "condition {i}: operator `{other}` is not equals, not_equals or contains"
                ));
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `{expression}` form, as far as it is supported here.
fn expression(text: &str, ctx: &Context) -> Result<bool, String> {
    let e = text.trim();
    let e = e
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .map_or(e, str::trim);
    let literal = |s: &str| -> Result<Value, String> {
        let s = s.trim();
        if let Some(q) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Ok(Value::String(q.to_string()));
        }
        serde_json::from_str(s).map_err(|_| {
            format!("`{s}` is not a literal (a number, true, false, null or a quoted string)")
        })
    };
    let (path, op, want) = if let Some((l, r)) = e.split_once("==") {
        (l, "==", Some(literal(r)?))
    } else if let Some((l, r)) = e.split_once("!=") {
        (l, "!=", Some(literal(r)?))
    } else {
        (e, "", None)
    };
    let path = path.trim();
    if !(path.starts_with("event.") || path.starts_with("pack.config."))
        || path.contains(|c: char| c.is_whitespace() || "()[]<>&|+-*/!".contains(c))
    {
        return Err(format!(
            "expression `{text}` is beyond what this API evaluates (`<path>`, `<path> == <literal>`, `<path> != <literal>` over event.* and pack.config.*)"
        ));
    }
    let found = lookup(path, ctx);
    Ok(match (op, want) {
        ("==", Some(w)) => found == Some(&w),
        ("!=", Some(w)) => found != Some(&w),
        _ => found.is_some_and(|v| match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_and_keeps_types() {
        let payload =
            json!({"execution_count": 3, "fired_at": "2030-01-01T00:00:00Z", "n": {"x": [1, 2]}});
        let params = json!({
            "message": "tick {{ trigger.payload.execution_count }} at {{trigger.payload.fired_at}}",
            "count": "{{ trigger.payload.execution_count }}",
            "deep": "{{ trigger.payload.n.x.1 }}",
            "missing": "{{ trigger.payload.nope }}",
            "plain": 5
        });
        let ctx = Context::new(
            7,
            "core.intervaltimer",
            &payload,
            "2030-01-01T00:00:00Z",
            None,
        );
        assert_eq!(
            render(&params, &ctx),
            json!({"message": "tick 3 at 2030-01-01T00:00:00Z", "count": 3, "deep": 2, "missing": "{{ trigger.payload.nope }}", "plain": 5})
        );
    }

    /// Upstream's templates: `event.payload`, `event.id`, `event.trigger`, `pack.config`.
    #[test]
    fn renders_upstreams_event_and_pack_config() {
        let ctx = Context::new(
            42,
            "core.intervaltimer",
            &json!({"execution_count": 3}),
            "2030-01-01T00:00:00Z",
            Some(&json!({"greeting": "hi"})),
        );
        let params = json!({
            "message": "{{ pack.config.greeting }} #{{ event.payload.execution_count }} from {{ event.trigger }}",
            "id": "{{ event.id }}",
        });
        assert_eq!(
            render(&params, &ctx),
            json!({"message": "hi #3 from core.intervaltimer", "id": 42})
        );
    }

    #[test]
    fn conditions_true_false_and_unevaluable() {
        let ctx = Context::new(
            1,
            "t",
            &json!({"status": "ok", "n": 3, "msg": "disk full"}),
            "",
            Some(&json!({"on": true})),
        );
        let c = |v: Value| conditions_hold(Some(&v), &ctx);
        assert_eq!(c(json!(null)), Ok(true));
        assert_eq!(c(json!([])), Ok(true));
        assert_eq!(
            c(json!([{"field": "status", "operator": "equals", "value": "ok"}])),
            Ok(true)
        );
        assert_eq!(
            c(
                json!([{"field": "status", "operator": "equals", "value": "ok"}, {"field": "n", "operator": "not_equals", "value": 3}])
            ),
            Ok(false)
        );
        assert_eq!(
            c(json!([{"field": "msg", "operator": "contains", "value": "full"}])),
            Ok(true)
        );
        assert!(
            c(json!([{"field": "nope", "operator": "equals", "value": 1}]))
                .unwrap_err()
                .contains("nope")
        );
        assert!(
            c(json!([{"field": "n", "operator": "greater", "value": 1}]))
                .unwrap_err()
                .contains("greater")
        );
        assert!(c(json!({"n": 3})).unwrap_err().contains("neither"));
        assert_eq!(
            c(json!({"expression": "{{ event.payload.n == 3 }}"})),
            Ok(true)
        );
        assert_eq!(
            c(json!({"expression": "event.payload.status != 'ok'"})),
            Ok(false)
        );
        assert_eq!(c(json!({"expression": "pack.config.on"})), Ok(true));
        assert!(
            c(json!({"expression": "event.payload.n > 2"}))
                .unwrap_err()
                .contains("beyond")
        );
    }

    #[test]
    fn instance_ids() {
        assert_eq!(instance_rule(Some("rule_mypack.tick")), Some("mypack.tick"));
        assert_eq!(instance_rule(Some("other")), None);
        assert_eq!(instance_rule(None), None);
    }
}
