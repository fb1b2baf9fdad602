//! The message-property decoder on any bytes: what every record read carries.
//!
//! Items decode cleanly up to the first error, after which decoding stops; a name never holds a
//! separator; lookups find the first property of a name; what decodes to properties the encoder
//! accepts encodes back to the same bytes (a missing last terminator aside).
#![no_main]

use ferrymq_proto::properties::{self, NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR};
use libfuzzer_sys::fuzz_target;

fn has_separator(s: &str) -> bool {
    s.bytes().any(|b| b == NAME_VALUE_SEPARATOR || b == PROPERTY_SEPARATOR)
}

fuzz_target!(|data: &[u8]| {
    let items: Vec<_> = properties::decode(data).collect();
    let ok: Vec<_> = items.iter().map_while(|i| i.as_ref().ok()).collect();
    assert!(items.len() - ok.len() <= 1, "decoding goes on after an error");
    for p in &ok {
        assert!(!has_separator(p.name) && !p.value.contains('\u{2}'));
        let first = ok.iter().find(|q| q.name == p.name).map(|q| q.value);
        assert_eq!(properties::get(data, p.name), first);
    }
    if ok.len() == items.len() && ok.iter().all(|p| !p.name.is_empty() && !has_separator(p.value)) {
        let mut again = Vec::new();
        properties::encode(ok.iter().map(|p| (p.name, p.value)), &mut again).expect("decoded properties encode");
        let mut terminated = data.to_vec();
        if terminated.last().is_some_and(|&b| b != PROPERTY_SEPARATOR) {
            terminated.push(PROPERTY_SEPARATOR);
        }
        assert_eq!(again, terminated);
    }
});
