//! A config arrives from config drives, URLs and the network (apply-config
//! in maintenance mode): parsing, validating and patching it must return
//! an error, never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slate_config::patch::{Patch, merge};
use slate_config::{MachineConfig, Mode};

fuzz_target!(|data: &[u8]| {
    let _ = MachineConfig::parse_bytes(data, "user-data", Mode::Metal);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = slate_config::yaml::PathIndex::build(text);
        if let Ok(Patch::Merge(fragment)) = Patch::parse(text, "patch") {
            let mut doc = serde_json::json!({"machine": {"certSANs": ["a"]}});
            merge(&mut doc, &fragment);
        }
    }
});
