//! Golden files for validation messages: each `golden/NAME.yaml` is checked
//! and what `slatectl validate` would print is compared with
//! `golden/NAME.errors`. After a deliberate change of wording, regenerate
//! with `UPDATE_GOLDEN=1 cargo test -p slate-config --test validation`
//! and review the diff.

use std::path::Path;

use slate_config::{MachineConfig, Mode};

fn check(name: &str, mode: Mode) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input =
        std::fs::read_to_string(dir.join(format!("{name}.yaml"))).expect("read golden input");
    let got = match MachineConfig::parse_for(&input, &format!("{name}.yaml"), mode) {
        Ok(_) => "valid\n".to_owned(),
        Err(e) => format!("{e}\n"),
    };
    let golden = dir.join(format!("{name}.errors"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden output");
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "{name}: output differs from {}",
        golden.display()
    );
}

#[test]
fn network_and_cluster_problems() {
    check("network-and-cluster", Mode::Metal);
}

#[test]
fn a_misspelt_field_is_named_with_its_line() {
    check("unknown-field", Mode::Cloud);
}

/// Every field of the schema is described in docs/config.md: a config with
/// every field set is walked, and each leaf's path must appear there (in
/// the interfaces table, relative to `machine.network.interfaces[]`).
#[test]
fn every_field_is_in_the_reference() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md"))
            .unwrap();
    let full = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/every-field.yaml"),
    )
    .unwrap();
    let config = MachineConfig::parse(&full, "every-field.yaml").unwrap();
    // Serialized back, so a field the example forgot shows up as missing
    // from the round trip rather than silently from the check.
    assert_eq!(
        MachineConfig::parse(&config.to_yaml().unwrap(), "round trip").unwrap(),
        config
    );
    let value = serde_json::to_value(&config).unwrap();
    let mut leaves = Vec::new();
    walk(&value, String::new(), &mut leaves);
    assert!(leaves.len() > 40, "{leaves:?}");
    let missing: Vec<&String> = leaves
        .iter()
        .filter(|path| {
            let relative = path
                .strip_prefix("machine.network.interfaces[].")
                .unwrap_or(path);
            !doc.contains(&format!("`{relative}`"))
        })
        .collect();
    assert!(missing.is_empty(), "not in docs/config.md: {missing:?}");
}

fn walk(value: &serde_json::Value, path: String, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        // Free-form maps (extra flags, resource quantities) are one
        // documented field.
        serde_json::Value::Object(map)
            if !["extraArgs", "requests", "limits"]
                .iter()
                .any(|free| path.ends_with(free)) =>
        {
            for (k, v) in map {
                walk(v, join(k), out);
            }
        }
        serde_json::Value::Array(items)
            if items.iter().all(|i| i.is_object()) && !items.is_empty() =>
        {
            for item in items {
                walk(item, format!("{path}[]"), out);
            }
        }
        _ => {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
}

/// A worker may leave the machine CA key out (a control-plane node signs
/// its API certificate); a control-plane node may not.
#[test]
fn only_control_plane_nodes_need_the_machine_ca_key() {
    let bundle = slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "keys".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        ..Default::default()
    })
    .unwrap();
    let mut worker = bundle.worker.clone();
    worker.machine.ca.key = None;
    let yaml = worker.to_yaml().unwrap();
    MachineConfig::parse(&yaml, "worker.yaml").unwrap();

    let mut cp = bundle.controlplane.clone();
    cp.machine.ca.key = None;
    let err = MachineConfig::parse(&cp.to_yaml().unwrap(), "cp.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("machine.ca.key") && err.contains("is required: control-plane nodes sign"),
        "{err}"
    );
}
