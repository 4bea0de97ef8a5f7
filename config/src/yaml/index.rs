//! Where each value of a YAML document stands, by its path
//! (`machine.network.interfaces[0].addresses[1]`).
//!
//! serde gives the typed config but forgets positions; validation works on
//! the typed config and looks the position of each problem up here. This
//! keeps the schema free of span wrappers (`Spanned<T>` everywhere would
//! leak into every consumer of the config) at the cost of one extra pass of
//! the event parser, which only runs when a file is validated.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A position in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// Positions of the values (and of the keys, for mapping entries) in one
/// YAML document.
#[derive(Debug, Default, Clone)]
pub struct PathIndex {
    values: HashMap<String, Position>,
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

impl PathIndex {
    /// Indexes `text`. A document that does not parse gives the positions
    /// seen before the error: the caller reports the parse error itself.
    pub fn build(text: &str) -> Self {
        let mut index = Self::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let position = Position {
                line: span.start.line() as u64,
                column: span.start.col() as u64 + 1,
            };
            match event {
                Event::Scalar(value, ..) => {
                    // A scalar is either a mapping key or a value.
                    if let Some(Frame::Mapping {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some(value.into_owned());
                        continue;
                    }
                    if let Some(path) = next_path(&mut stack) {
                        index.values.insert(path, position);
                    }
                }
                Event::Alias(_) => {
                    if let Some(path) = next_path(&mut stack) {
                        index.values.insert(path, position);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    // A collection used as a mapping key (rare, never valid
                    // in a config) is indexed under a placeholder name.
                    let path = match stack.last_mut() {
                        Some(Frame::Mapping {
                            key: key @ None,
                            path,
                        }) => {
                            *key = Some("?".into());
                            format!("{path}.?")
                        }
                        _ => next_path(&mut stack).unwrap_or_default(),
                    };
                    index.values.insert(path.clone(), position);
                    stack.push(if is_map {
                        Frame::Mapping { path, key: None }
                    } else {
                        Frame::Sequence { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    // The collection was the value of its parent's key.
                    if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
                        *key = None;
                    }
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        index
    }

    /// The position of the value at `path`, or of its nearest ancestor that
    /// is in the document (a missing field is reported where its parent is).
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(p) = self.values.get(path) {
                return Some(*p);
            }
            path = parent(path)?;
        }
    }
}

/// The path of the node that comes next in the innermost collection, and
/// advance that collection.
fn next_path(stack: &mut [Frame]) -> Option<String> {
    match stack.last_mut()? {
        Frame::Sequence { path, next } => {
            let p = format!("{path}[{next}]");
            *next += 1;
            Some(p)
        }
        Frame::Mapping { path, key } => {
            // The value of the entry: the key is consumed.
            let key = key.take()?;
            Some(join(path, &key))
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → the document root `""`.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: v1alpha1
machine:
  network:
    interfaces:
      - interface: eth0
        addresses:
          - 10.0.0.5/24
          - 10.0.0.300/24
      - interface: eth1
        routes: [{network: 0.0.0.0/0, gateway: 10.0.1.1}]
";

    fn at(index: &PathIndex, path: &str) -> (u64, u64) {
        let p = index
            .find(path)
            .unwrap_or_else(|| panic!("{path} not found"));
        (p.line, p.column)
    }

    #[test]
    fn values_of_nested_mappings_and_sequences() {
        let index = PathIndex::build(DOC);
        assert_eq!(at(&index, "version"), (1, 10));
        assert_eq!(
            at(&index, "machine.network.interfaces[0].interface"),
            (5, 20)
        );
        assert_eq!(
            at(&index, "machine.network.interfaces[0].addresses[1]"),
            (8, 13)
        );
        assert_eq!(
            at(&index, "machine.network.interfaces[1].interface"),
            (9, 20)
        );
        assert_eq!(
            at(&index, "machine.network.interfaces[1].routes[0].gateway"),
            (10, 48)
        );
    }

    #[test]
    fn a_missing_path_falls_back_to_its_nearest_ancestor() {
        let index = PathIndex::build(DOC);
        assert_eq!(
            at(&index, "machine.network.interfaces[1].mtu"),
            at(&index, "machine.network.interfaces[1]")
        );
        assert_eq!(at(&index, "machine.network.interfaces[1]"), (9, 9));
        assert_eq!(at(&index, "cluster.name"), (1, 1));
    }

    #[test]
    fn broken_documents_index_what_came_before() {
        let index = PathIndex::build("a: 1\nb: [2\n");
        assert_eq!(at(&index, "a"), (1, 4));
    }
}
