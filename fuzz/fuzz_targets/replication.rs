//! The replication stream on any bytes, as either side reads it: frames, and the JSON of HELLO and
//! META.
//!
//! Input: the first byte picks the frame limit (a peer's first frame has a smaller one), the rest is
//! the stream. Every frame read re-encodes to a frame that reads back the same; the JSON parses or
//! fails.
#![no_main]

use ferrymq_cluster::master::{Hello, MetadataCopy};
use ferrymq_cluster::wire::{FRAME_BYTES_MAX, Frame, HELLO_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut input)) = data.split_first() else { return };
    let max = [FRAME_BYTES_MAX, HELLO_BYTES_MAX, 64, 0][usize::from(mode % 4)];
    while let Ok(frame) = Frame::read_limited(&mut input, max) {
        let mut again = Vec::new();
        frame.write_to(&mut again).expect("a frame read writes");
        assert_eq!(Frame::read_from(&mut again.as_slice()).expect("reads back"), frame);
        match &frame {
            Frame::Hello { json } => {
                let _ = serde_json::from_slice::<Hello>(json);
            }
            Frame::Meta { json } => {
                let _ = serde_json::from_slice::<MetadataCopy>(json);
            }
            _ => {}
        }
    }
});
