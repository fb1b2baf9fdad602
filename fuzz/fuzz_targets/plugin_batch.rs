//! The plugin batch decoder on any bytes (the host's check of what it hands plugins).
//!
//! A batch decodes to nothing or to messages that re-encode to a batch no longer than the input,
//! which decodes to the same messages.
#![no_main]

use ferrymq_proto::plugin_batch::{decode_batch, encode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(decoded) = decode_batch(data) else { return };
    let mut again = (decoded.len() as u32).to_le_bytes().to_vec();
    for m in &decoded {
        encode_message(m, m.body.is_some(), &mut again);
    }
    assert!(again.len() <= data.len());
    assert_eq!(decode_batch(&again).as_ref(), Some(&decoded));
});
