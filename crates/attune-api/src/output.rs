//! An action's standard output read as its result, per `output_format`, as
//! upstream's worker reads it: `json` the whole output, else its last
//! non-empty line; `yaml` the whole output; `jsonl` one value per line (the
//! result is their array); `text` no result. A result that nests deeper
//! than [`crate::params::MAX_DEPTH`] is not kept (the output still is): every
//! answer that carries it must stay readable.

use attune_pack::OutputFormat;
use serde_json::Value;

/// The result of `stdout`, or `None` when the format has none, it does not
/// parse, or it nests too deep.
pub fn parse(format: OutputFormat, stdout: &str) -> Option<Value> {
    let result = parse_any(format, stdout)?;
    if let Err(bad) = crate::params::check_depth("result", &result) {
        tracing::warn!("the action's result is not kept: it {}", bad.message);
        return None;
    }
    Some(result)
}

fn parse_any(format: OutputFormat, stdout: &str) -> Option<Value> {
    let text = stdout.trim();
    match format {
        OutputFormat::Text => None,
        OutputFormat::Json => serde_json::from_str(text).ok().or_else(|| {
            let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
            serde_json::from_str(last.trim()).ok()
        }),
        OutputFormat::Yaml => serde_saphyr::from_str::<Value>(text)
            .ok()
            .filter(|v| !v.is_null()),
        OutputFormat::Jsonl => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l.trim()).ok())
            .collect::<Option<Vec<Value>>>()
            .map(Value::Array),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_format_as_upstream_reads_it() {
        assert_eq!(
            parse(OutputFormat::Json, "{\"a\": 1}\n"),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            parse(OutputFormat::Json, "progress 50%\ndone\n{\"a\": 2}\n"),
            Some(json!({"a": 2})),
            "the last line when the whole output is not JSON"
        );
        assert_eq!(parse(OutputFormat::Json, "not json"), None);
        assert_eq!(
            parse(OutputFormat::Yaml, "a: 1\nb: [x]\n"),
            Some(json!({"a": 1, "b": ["x"]}))
        );
        assert_eq!(
            parse(OutputFormat::Jsonl, "{\"n\": 1}\n\n{\"n\": 2}\n"),
            Some(json!([{"n": 1}, {"n": 2}]))
        );
        assert_eq!(parse(OutputFormat::Jsonl, "{\"n\": 1}\nbroken\n"), None);
        assert_eq!(parse(OutputFormat::Text, "{}"), None);
    }

    /// A JSON result 120 levels deep was kept, and `GET /executions/{id}`
    /// wrapped it past what serde_json (the worker's, the tests') reads.
    #[test]
    fn a_result_deeper_than_the_limit_is_not_kept() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let limit = crate::params::MAX_DEPTH;
        assert!(parse(OutputFormat::Json, &deep(limit)).is_some());
        assert_eq!(parse(OutputFormat::Json, &deep(120)), None);
        assert_eq!(parse(OutputFormat::Yaml, &deep(limit + 1)), None);
    }
}
