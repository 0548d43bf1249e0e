//! Response bytes from a backend as the proxy reads them: the head (after a GET or a HEAD), then
//! the body streamed in pieces, de-chunked as for an HTTP/1.0 client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::http1::{self, BodyReader};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let method = if flags & 1 == 0 { "GET" } else { "HEAD" };
    let Ok(Some((head, n))) = http1::parse_response_head(input, 64 * 1024, method) else {
        return;
    };
    let mut reader = BodyReader::new(head.body, u64::MAX);
    let mut plain = Vec::new();
    for piece in input[n..].chunks(usize::from(flags >> 1) + 1) {
        match reader.advance(piece, Some(&mut plain)) {
            Ok(k) if reader.is_done() => {
                assert!(k <= piece.len());
                break;
            }
            Ok(k) => assert_eq!(k, piece.len(), "a body not done takes every byte"),
            Err(_) => break,
        }
    }
    assert!(plain.len() as u64 == reader.payload());
});
