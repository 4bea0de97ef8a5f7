//! `ip=` on the kernel command line is typed by people; a malformed one is
//! an error that networkd logs, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = slate_networkd::cmdline::parse_cmdline(text);
    }
});
