//! Extension services: programs of the extension layer that machined runs
//! as services of their own, declared by a YAML file in the layer
//! (`etc/slate/services/NAME.yaml`, on the node
//! `/usr/local/etc/slate/services/`), as Talos system extensions declare
//! theirs. `slate-image --extension-service FILE` checks and adds one; machined
//! checks it again at boot and skips (with an error in its log) a file
//! that does not parse, never the others.
//!
//! ```yaml
//! name: node-exporter
//! command: [/usr/local/bin/node_exporter, --web.listen-address=:9100]
//! env: {GOMAXPROCS: "1"}
//! restart: always          # always | on-failure | never
//! dependsOn:
//!   network: true          # wait for an address
//!   services: [containerd]
//! limits:
//!   memoryMiB: 64
//!   pids: 32
//!   cpuPercent: 50         # of one core
//!   oomScoreAdj: 500
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where extension services are declared, inside the layer.
pub const DIR_IN_LAYER: &str = "etc/slate/services";
/// And on a node.
pub const DIR: &str = "/usr/local/etc/slate/services";
/// Names the node's own services hold.
pub const RESERVED: &[&str] = &["containerd", "etcd", "kubelet"];
/// A declaration larger than this is not a declaration.
const MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionService {
    /// The service's id (`slatectl service NAME`): a-z, 0-9, `-`.
    pub name: String,
    /// The program (absolute path) and its arguments.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default, skip_serializing_if = "DependsOn::is_empty")]
    pub depends_on: DependsOn,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DependsOn {
    /// Wait until the node has an address.
    #[serde(default)]
    pub network: bool,
    /// Wait until these services are up (healthy, if they have a check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

impl DependsOn {
    fn is_empty(&self) -> bool {
        !self.network && self.services.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// `memory.max`, in MiB.
    #[serde(rename = "memoryMiB", default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// `pids.max`: processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// `cpu.max`, in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u64>,
    /// `oom_score_adj`, -1000..=1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtensionServiceError {
    #[error("{source_name}: line {line}, column {column}: {message}")]
    Parse {
        source_name: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        source_name: String,
        field: &'static str,
        message: String,
    },
    #[error("{source_name}: larger than {MAX_BYTES} bytes")]
    TooLarge { source_name: String },
}

impl ExtensionService {
    /// Parses and checks a declaration; `source_name` (its path) names it
    /// in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ExtensionServiceError> {
        if text.len() > MAX_BYTES {
            return Err(ExtensionServiceError::TooLarge {
                source_name: source_name.to_owned(),
            });
        }
        let service: Self =
            crate::yaml::from_str(text).map_err(|e| ExtensionServiceError::Parse {
                source_name: source_name.to_owned(),
                line: e.line,
                column: e.column,
                message: e.message,
            })?;
        let invalid = |field, message: String| ExtensionServiceError::Invalid {
            source_name: source_name.to_owned(),
            field,
            message,
        };
        if !crate::is_label(&service.name) {
            return Err(invalid(
                "name",
                format!("{:?} is not a-z, 0-9 and '-'", service.name),
            ));
        }
        if RESERVED.contains(&service.name.as_str()) {
            return Err(invalid(
                "name",
                format!("{:?} is one of the node's own services", service.name),
            ));
        }
        match service.command.first() {
            Some(program) if program.starts_with('/') => {}
            _ => {
                return Err(invalid(
                    "command",
                    "needs the program's absolute path first".into(),
                ));
            }
        }
        let l = &service.limits;
        if l.memory_mib == Some(0) || l.pids == Some(0) || l.cpu_percent == Some(0) {
            return Err(invalid(
                "limits",
                "0 would stop the service from running at all".into(),
            ));
        }
        if l.oom_score_adj
            .is_some_and(|a| !(-1000..=1000).contains(&a))
        {
            return Err(invalid("limits.oomScoreAdj", "must be -1000..=1000".into()));
        }
        Ok(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_parses_with_its_limits() {
        let s = ExtensionService::parse(
            "name: hog\ncommand: [/usr/local/bin/hog, --memory-mib, '256']\nlimits:\n  memoryMiB: 32\n  pids: 8\n",
            "hog.yaml",
        )
        .unwrap();
        assert_eq!(s.name, "hog");
        assert_eq!(s.limits.memory_mib, Some(32));
        assert_eq!(s.restart, Restart::Always);
    }

    #[test]
    fn bad_declarations_name_the_file_and_what_is_wrong() {
        let err = |text: &str| {
            ExtensionService::parse(text, "x.yaml")
                .unwrap_err()
                .to_string()
        };
        assert!(err("name: etcd\ncommand: [/bin/x]\n").contains("node's own services"));
        assert!(err("name: a\ncommand: [x]\n").contains("absolute path"));
        assert!(err("name: a\ncommand: [/x]\nlimits: {pids: 0}\n").contains("limits"));
        let e = err("name: a\ncommand: [/x]\nrestrat: never\n");
        assert!(e.starts_with("x.yaml: line 3"), "{e}");
        assert!(err("name: A_B\ncommand: [/x]\n").contains("name"));
    }
}
