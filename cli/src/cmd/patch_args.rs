//! `--patch`/`--config-patch` arguments: `@FILE` reads a file, anything else
//! is the patch itself (YAML or JSON), as in talosctl.

use anyhow::Context as _;
use slate_config::patch::Patch;

/// Loads every patch argument, naming each by its file or `--patch #N`.
pub fn load(args: &[String], flag: &str) -> anyhow::Result<Vec<(String, Patch)>> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let (name, text) = match arg.strip_prefix('@') {
                Some(path) => (
                    path.to_owned(),
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading the patch file {path}"))?,
                ),
                None => (format!("{flag} #{}", i + 1), arg.clone()),
            };
            let patch = Patch::parse(&text, &name)?;
            Ok((name, patch))
        })
        .collect()
}
