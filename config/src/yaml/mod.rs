//! YAML in and out, the same way for every Slate file: errors carry the
//! line and column, and long strings (base64 keys) stay on one line, as in
//! Talos configs, so they can be copied and grepped.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A YAML error at a position (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Located> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        Located {
            line,
            column,
            message: message_of(&e.to_string()),
        }
    })
}

pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string_with_options(
        value,
        serde_saphyr::ser_options! { prefer_block_scalars: false },
    )
}

/// serde-saphyr renders a source snippet under its message; the first line
/// is the message itself. Its own "error: line L column C:" prefix is
/// dropped because callers print the location in one place.
fn message_of(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or_default().trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let without_location = line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(_, message)| message);
    without_location.unwrap_or(line).to_owned()
}

mod index;
pub use index::PathIndex;
