//! An action's standard output read as its result, per `output_format`, as
//! upstream's worker reads it: `json` the whole output, else its last
//! non-empty line; `yaml` the whole output; `jsonl` one value per line (the
//! result is their array); `text` no result.

use attune_pack::OutputFormat;
use serde_json::Value;

/// The result of `stdout`, or `None` when the format has none or it does not parse.
pub fn parse(format: OutputFormat, stdout: &str) -> Option<Value> {
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
}
