//! Exit codes of every binary (packs-assemble, the services, the timer sensor),
//! defined once: the constants, their meanings ([`ALL`]), and the `--help`
//! text made from them ([`help`]). docs/reference.md's table is checked against
//! [`ALL`] by `tests/stack/tests/contracts.rs`.

/// One exit code and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    /// The process exit status.
    pub code: u8,
    /// What it means, as its constant's documentation says.
    pub meaning: &'static str,
}

/// Defines one constant per code and [`ALL`] with the same text.
macro_rules! codes {
    ($( $(#[doc = $doc:literal])+ $name:ident = $value:literal; )+) => {
        $( $(#[doc = $doc])+ pub const $name: u8 = $value; )+
        /// Every exit code, in order.
        pub const ALL: &[Code] = &[$(Code { code: $value, meaning: concat!($($doc),+) }),+];
    };
}

codes! {
    /// Success; a service or sensor stopped by SIGTERM or SIGINT.
    OK = 0;
    /// The input is wrong: an invalid pack, a stale or dynamic binary, a failed
    /// verification (nothing was published); for `attune-api --healthcheck`,
    /// the API is not healthy.
    INPUT = 1;
    /// Usage: a flag, setting or path is missing or wrong (also a path given on
    /// the command line that does not exist).
    USAGE = 2;
    /// The environment failed: I/O, permissions, a lock timeout, an address in
    /// use, the API unreachable or refusing the token (401/403).
    ENVIRONMENT = 3;
}

/// `attune-api --healthcheck` on an API that is not healthy: [`INPUT`]'s
/// value, because Docker's `HEALTHCHECK` reads 1 as unhealthy.
pub const UNHEALTHY: u8 = INPUT;

/// The meaning of a code as one line of text, spaces collapsed.
pub fn meaning(code: &Code) -> String {
    code.meaning
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Width of [`help`]'s lines: below clap's 100 columns, which it would rewrap.
const HELP_WIDTH: usize = 80;

/// The `Exit codes:` paragraph of every binary's `--help`: a code a line,
/// wrapped at 80 columns under its meaning.
pub fn help() -> String {
    let mut text = String::from("Exit codes:");
    for c in ALL {
        let mut line = format!("  {}  ", c.code);
        let indent = line.len();
        let mut empty = true;
        for word in c.meaning.split_whitespace() {
            if !empty && line.len() + 1 + word.len() > HELP_WIDTH {
                text.push('\n');
                text.push_str(&line);
                line = " ".repeat(indent);
                empty = true;
            }
            if !empty {
                line.push(' ');
            }
            line.push_str(word);
            empty = false;
        }
        text.push('\n');
        text.push_str(&line);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_house_rules_and_the_help_lists_each() {
        let codes: Vec<u8> = ALL.iter().map(|c| c.code).collect();
        assert_eq!(codes, [OK, INPUT, USAGE, ENVIRONMENT]);
        assert_eq!(codes, [0, 1, 2, 3]);
        let help = help();
        assert!(help.starts_with("Exit codes:\n  0  Success;"), "{help}");
        assert!(
            help.contains("\n  3  The environment failed: I/O, permissions,"),
            "{help}"
        );
        assert!(help.lines().all(|l| l.len() <= HELP_WIDTH), "{help}");
        // Every word of every meaning, in order, under its code.
        let words: Vec<String> = help.split_whitespace().map(String::from).collect();
        let mut expected = vec!["Exit".to_string(), "codes:".to_string()];
        for c in ALL {
            expected.push(c.code.to_string());
            expected.extend(c.meaning.split_whitespace().map(String::from));
        }
        assert_eq!(words, expected);
    }
}
