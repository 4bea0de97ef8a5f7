//! A config drive holds whatever its author wrote: parsing and validating
//! it must return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slate_machinery::config::MachineConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MachineConfig::parse(text, "user-data");
    }
});
