//! Events to executions: which rules an event matches, and `action_params`
//! rendered from `{{ trigger.payload.<field> }}`.

use serde_json::{Map, Value};

/// The rule id that a timer instance names (`rule_<id>`), if any.
pub fn instance_rule(trigger_instance_id: Option<&str>) -> Option<&str> {
    trigger_instance_id?.strip_prefix("rule_")
}

/// The value a template expression names: `trigger.payload.a.b` -> `payload["a"]["b"]`.
fn lookup<'a>(expr: &str, payload: &'a Value) -> Option<&'a Value> {
    let path = expr.trim().strip_prefix("trigger.payload")?;
    let mut v = payload;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn render_str(s: &str, payload: &Value) -> Value {
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

/// Renders every string in `params` against the event payload.
pub fn render(params: &Value, payload: &Value) -> Value {
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
        assert_eq!(
            render(&params, &payload),
            json!({"message": "tick 3 at 2030-01-01T00:00:00Z", "count": 3, "deep": 2, "missing": "{{ trigger.payload.nope }}", "plain": 5})
        );
    }

    #[test]
    fn instance_ids() {
        assert_eq!(instance_rule(Some("rule_mypack.tick")), Some("mypack.tick"));
        assert_eq!(instance_rule(Some("other")), None);
        assert_eq!(instance_rule(None), None);
    }
}
