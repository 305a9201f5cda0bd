//! Durations (`every`, `--in`, `expires`) and instants (`--at`, `anchor`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqsbeat::schedule::duration::{format_duration, parse_duration, parse_instant};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = parse_duration(text) {
        // What we print must parse back to the same duration.
        let shown = format_duration(d);
        assert_eq!(parse_duration(&shown).ok(), Some(d), "{text:?} -> {shown:?}");
    }
    let _ = parse_instant(text);
});
