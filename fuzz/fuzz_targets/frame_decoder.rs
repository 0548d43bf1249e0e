//! The frame decoder fed a stream in pieces of a fuzzer-chosen size, as partial reads deliver
//! it (the idea of h2's `fuzz_e2e`): it must never panic, must take exactly 4 + the declared
//! length for each frame, and must ask for more than it has when it needs more.
#![no_main]

use protocol::frame::{decode, Decoded};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    let mut buf: Vec<u8> = Vec::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&buf, MAX) {
                Ok(Decoded::Frame { body, consumed }) => {
                    let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    assert_eq!(consumed, 4 + declared, "took exactly the declared length");
                    assert_eq!(body.len(), declared);
                    let _ = protocol::wire::decode(body);
                    buf.drain(..consumed);
                }
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(needed > buf.len(), "asks for more than it has");
                    break;
                }
                // The connection would be closed here.
                Err(_) => return,
            }
        }
    }
});
