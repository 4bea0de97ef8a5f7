//! What the node reads back from its own disk, which a power cut, a
//! failing disk or someone with the disk in hand may have left in any
//! state: a META copy, GRUB's environment block, and a release bundle
//! (which also comes from the network). Each returns a value or an error,
//! never panics; a bundle never hands its sink more bytes than the
//! manifest promised for the file.
#![no_main]

use std::io::Read as _;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((_, record)) = slate_machined::install::meta::decode(data) {
        // What decodes must survive a round of JSON.
        let _ = serde_json::to_vec(&record).unwrap();
    }
    if let Ok(vars) = slate_machined::install::grub::parse_env(data) {
        // A block that parses renders again, or is refused, without panic.
        let _ = slate_machined::install::grub::render_env(&vars);
    }
    let _ = slate_bundle::Manifest::parse(data);
    let _ = slate_bundle::read(data, |_, expected, r| {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)?;
        assert!(buf.len() as u64 <= expected.size);
        Ok(())
    });
});
