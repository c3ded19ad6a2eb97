//! What the user sees while an artifact is fetched: status lines and
//! progress bars on stderr, or nothing at all when asked to be quiet.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The look of a byte-counting bar.
const BAR_TEMPLATE: &str =
    "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// Speaks to the user on stderr unless quiet; draws bars only on a terminal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reporter {
    quiet: bool,
    bars: bool,
}

impl Reporter {
    /// A reporter; bars are drawn only when stderr is a terminal.
    pub(crate) fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bars: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Prints one status line, unless quiet.
    pub(crate) fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A byte-counting bar of `total` bytes labelled `label`, or a hidden one.
    pub(crate) fn bar(&self, total: u64, label: &'static str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        // The template is a constant; should it ever fail to parse, a bar
        // without style is still a working bar.
        if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label);
        bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_reporter_draws_nothing() {
        let reporter = Reporter::new(true);
        assert!(reporter.bar(100, "downloading").is_hidden());
    }

    #[test]
    fn the_bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
