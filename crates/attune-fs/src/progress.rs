//! Progress bars on a terminal for large trees; nothing otherwise.

use std::io::IsTerminal;

/// Trees smaller than this finish too fast for a bar to help.
const MIN_ITEMS: u64 = 500;

/// Whether and how to show progress.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Progress on stderr when it is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// No progress at all.
    pub fn hidden() -> Progress {
        Progress { enabled: false }
    }

    /// A bar for `len` items, shown only for large trees.
    pub fn bar(&self, label: &'static str, len: u64) -> Bar {
        let inner = (self.enabled && len >= MIN_ITEMS).then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{msg:>9} [{bar:30}] {pos}/{len} files ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> ");
            indicatif::ProgressBar::new(len)
                .with_style(style)
                .with_message(label)
        });
        Bar { inner }
    }
}

/// One progress bar (or none).
#[derive(Debug)]
pub struct Bar {
    inner: Option<indicatif::ProgressBar>,
}

impl Bar {
    /// Sets the position.
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.inner {
            b.set_position(pos);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.inner {
            b.finish_and_clear();
        }
    }
}
