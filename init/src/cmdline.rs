//! The few kernel command-line switches init reads.
//!
//! Read from a path passed in (normally
//! [`slate_common::constants::PROC_CMDLINE`]) so tests use a temp file.
//! The command line never selects the boot stage: see [`crate::detect_stage`].

use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `slate.debug` (or `slate.debug=1|true|yes|on`): verbose console output.
    pub debug: bool,
}

impl Cmdline {
    /// Read and parse; a missing or unreadable file means defaults.
    pub fn read(path: &Path) -> Cmdline {
        match std::fs::read_to_string(path) {
            Ok(text) => Cmdline::parse(&text),
            Err(_) => Cmdline::default(),
        }
    }

    pub fn parse(text: &str) -> Cmdline {
        let mut out = Cmdline::default();
        for word in text.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            if key == "slate.debug" {
                out.debug = match value {
                    None => true,
                    Some(v) => matches!(v, "1" | "true" | "yes" | "on"),
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_switch() {
        let cases = [
            ("", false),
            ("console=ttyS0 quiet", false),
            ("console=ttyS0 slate.debug", true),
            ("slate.debug=1\n", true),
            ("slate.debug=on", true),
            ("slate.debug=0", false),
            ("slate.debug slate.debug=no", false),
            ("xslate.debug", false),
        ];
        for (text, want) in cases {
            assert_eq!(Cmdline::parse(text).debug, want, "{text:?}");
        }
    }

    #[test]
    fn read_from_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmdline");
        assert_eq!(Cmdline::read(&path), Cmdline::default());
        std::fs::write(&path, "root=/dev/ram0 slate.debug\n").unwrap();
        assert!(Cmdline::read(&path).debug);
    }
}
