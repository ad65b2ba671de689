//! Output: results on stdout (human or JSON), diagnostics on stderr, logs via
//! `tracing`. A closed stdout (`| head`) is not an error.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use attune_pack::{Diagnostic, Diagnostics, Severity};
use serde::Serialize;

use crate::cli::LogFormat;

/// Where diagnostics and results go.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// Results as JSON on stdout (diagnostics are then part of the result).
    pub json: bool,
    /// Log format of stderr.
    pub log_format: LogFormat,
    /// Suppress warnings.
    pub quiet: bool,
    /// `--show-path-as`: paths below the first are named below the second.
    pub show_path_as: Option<&'static (PathBuf, String)>,
}

impl Output {
    /// `d` with its paths named as the user knows them (`--show-path-as`).
    fn shown(&self, d: &Diagnostic) -> Diagnostic {
        let Some((from, to)) = self.show_path_as else {
            return d.clone();
        };
        let mut d = d.clone();
        if let Ok(rest) = d.path.strip_prefix(from) {
            d.path = Path::new(to).join(rest);
        }
        let from = from.display().to_string();
        let to = to.trim_end_matches('/');
        d.message = d.message.replace(&format!("{from}/"), &format!("{to}/"));
        d.hint = d
            .hint
            .map(|h| h.replace(&format!("{from}/"), &format!("{to}/")));
        d
    }
}

impl Output {
    /// Reports diagnostics on stderr, unless they go into the JSON result.
    pub fn diagnostics(&self, diags: &Diagnostics) {
        if self.json {
            return;
        }
        for d in diags.iter() {
            if self.quiet && d.severity == Severity::Warning {
                continue;
            }
            let d = &self.shown(d);
            match self.log_format {
                LogFormat::Human => eprintln!("{d}"),
                LogFormat::Json => {
                    let path = d.path.display().to_string();
                    let hint = d.hint.as_deref().unwrap_or_default();
                    let field = d.field.as_deref().unwrap_or_default();
                    match d.severity {
                        Severity::Error => tracing::error!(
                            path,
                            line = d.line,
                            column = d.column,
                            field,
                            hint,
                            "{}",
                            d.message
                        ),
                        Severity::Warning => tracing::warn!(
                            path,
                            line = d.line,
                            column = d.column,
                            field,
                            hint,
                            "{}",
                            d.message
                        ),
                    }
                }
            }
        }
    }

    /// Prints the result: `value` as JSON with `--json`, else `human`.
    pub fn result<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        let text = if self.json {
            serde_json::to_string_pretty(value).expect("results serialize")
        } else {
            human()
        };
        print_stdout(&text);
    }
}

/// Writes a line to stdout; a closed pipe ends the output quietly.
pub fn print_stdout(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|_| out.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("failed to write to stdout: {e}");
    }
}

/// `1 error, 2 warnings`-style counts.
pub fn counts(diags: &Diagnostics) -> String {
    let errors = diags.errors().count();
    let warnings = diags.iter().count() - errors;
    format!(
        "{} {}, {} {}",
        errors,
        plural(errors, "error"),
        warnings,
        plural(warnings, "warning")
    )
}

/// `word` or `words`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// Bytes as `12.3 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_plurals() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100.0 MiB");
        assert_eq!(plural(1, "pack"), "pack");
        assert_eq!(plural(2, "pack"), "packs");
    }
}
