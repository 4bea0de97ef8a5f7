//! `--patch`/`--config-patch` arguments: `@FILE` reads a file, anything else
//! is the patch itself (YAML or JSON), as in talosctl.

use anyhow::Context as _;
use slate_config::patch::Patch;

/// Loads every patch argument, naming each by its file or `--patch #N`.
pub fn load(args: &[String], flag: &str) -> anyhow::Result<Vec<(String, Patch)>> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let (name, text) = read(arg, &format!("{flag} #{}", i + 1))?;
            let patch = Patch::parse(&text, &name)?;
            Ok((name, patch))
        })
        .collect()
}

/// One patch argument's name (its file, else `inline`) and text.
pub fn read(arg: &str, inline: &str) -> anyhow::Result<(String, String)> {
    Ok(match arg.strip_prefix('@') {
        Some(path) => (
            path.to_owned(),
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the patch file {path}"))?,
        ),
        None => (inline.to_owned(), arg.to_owned()),
    })
}
