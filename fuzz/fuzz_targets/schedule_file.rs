//! Whole schedule files: TOML syntax, entry validation, diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqsbeat::entry::Context;
use sqsbeat::entry::file::parse_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let loaded = parse_str("fuzz.toml", text, &Context::default());
    for d in &loaded.diagnostics {
        // Every diagnostic points at a line of the file.
        assert!(d.line >= 1 && d.line <= text.lines().count().max(1) + 1, "{d:?}");
    }
    for e in &loaded.entries {
        let _ = e.next_after(chrono::DateTime::UNIX_EPOCH);
    }
});
