//! args / kwargs / headers as JSON (the entries table, `schedule --args`):
//! validation, then building the Celery message of what validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqsbeat::entry::{Context, Origin, RawEntry, message_size, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\u{1e}');
    let value = |p: Option<&str>| p.and_then(|p| serde_json::from_str(p).ok());
    let raw = RawEntry {
        task: Some("fuzz.task".into()),
        every: Some("1m".into()),
        args: value(parts.next()),
        kwargs: value(parts.next()),
        headers: value(parts.next()),
        ..Default::default()
    };
    let origin = Origin { file: "fuzz".into(), line: 1 };
    let (entry, _problems) = validate("fuzz", raw, origin, &Context::default());
    if let Some(e) = entry {
        let _ = message_size(&e);
    }
});
