//! Request bytes as the HTTP front and the proxy read them: whole-request parsing (the front),
//! and head parsing plus the streaming body reader fed in pieces (the proxy), which must agree
//! on where the body ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::http1::{self, BodyReader, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head: 8192,
        max_body: 1 << 20,
    };
    let whole = http1::parse_request(input, limits);
    if let Ok(Some((head, n))) = http1::parse_request_head(input, limits.max_head) {
        let _ = (
            head.keep_alive(),
            head.path(),
            head.has_token("connection", "upgrade"),
        );
        let mut reader = BodyReader::new(head.body, limits.max_body as u64);
        let mut taken = 0;
        let mut failed = false;
        for piece in input[n..].chunks(usize::from(step) + 1) {
            match reader.advance(piece, None) {
                Ok(k) => {
                    taken += k;
                    if reader.is_done() {
                        break;
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if let Ok(Parsed::Request(req, used)) = whole {
            assert!(!failed, "the whole parse accepted what the stream refused");
            assert!(reader.is_done());
            assert_eq!(
                used,
                n + taken,
                "both readers end the request at the same byte"
            );
            assert!(req.body.len() as u64 == reader.payload());
        }
    }
});
