//! Property tests of the frame codec: round trips for arbitrary messages, and arbitrary bytes
//! (whole or fed in arbitrary chunks) never panic the decoder, which consumes exactly the
//! declared length.

use proptest::prelude::*;
use protocol::frame::{self, Decoded, FrameError};
use protocol::wire::{self, Message, Next};

const MAX: usize = 64 * 1024;

fn any_message() -> impl Strategy<Value = Message> {
    (
        0i32..6,
        any::<u32>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..2048),
        0i32..8,
        0i32..3,
        0i32..5,
    )
        .prop_map(|(ty, id, ts, data, op, comp, prio)| Message {
            r#type: ty,
            message_id: id,
            timestamp: ts,
            data: data.into(),
            op,
            compression: comp,
            priority: prio,
        })
}

/// Feeds `wire` to the decoder in the given chunk sizes, the way a socket would deliver it,
/// keeping unconsumed bytes as the engine does.
fn decode_chunked(wire: &[u8], chunks: &[usize]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < wire.len() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, wire.len() - at);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        let mut used = 0;
        while let Decoded::Frame { body, consumed } = frame::decode(&buf[used..], MAX)? {
            assert_eq!(consumed, frame::HEADER + body.len());
            out.push(body.to_vec());
            used += consumed;
        }
        buf.drain(..used);
    }
    frame::finish(&buf, MAX)?;
    Ok(out)
}

proptest! {
    #[test]
    fn messages_round_trip_through_frames(msgs in proptest::collection::vec(any_message(), 1..20),
                                          chunks in proptest::collection::vec(1usize..300, 1..10)) {
        let mut wire_bytes = Vec::new();
        for m in &msgs {
            wire::encode(m, &mut wire_bytes);
        }
        let bodies = decode_chunked(&wire_bytes, &chunks).unwrap();
        prop_assert_eq!(bodies.len(), msgs.len());
        for (b, m) in bodies.iter().zip(&msgs) {
            prop_assert_eq!(&wire::decode(b).unwrap(), m);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_frames_take_exactly_their_declared_length(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        // Whole: every frame found is exactly 4 + its declared length.
        let mut at = 0;
        let mut whole = Vec::new();
        let end = loop {
            match wire::next_frame(&bytes[at..], MAX) {
                Next::Frame(body, n) => {
                    let declared = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                    prop_assert_eq!(body.len(), declared);
                    prop_assert_eq!(n, 4 + declared);
                    let _ = wire::decode(body); // may fail, must not panic
                    whole.push(body.to_vec());
                    at += n;
                }
                Next::NeedMore => break frame::finish(&bytes[at..], MAX),
                Next::Fatal(_) => break Err(FrameError::TooLarge { len: 0, max: MAX }),
            }
        };
        // Chunked: the same frames, or the same kind of error, however the bytes are split.
        match (end, decode_chunked(&bytes, &chunks)) {
            (Ok(()), Ok(chunked)) => prop_assert_eq!(chunked, whole),
            (Err(FrameError::TooLarge { .. }), Err(e)) => {
                prop_assert!(matches!(e, FrameError::TooLarge { .. }), "{e:?}");
            }
            (Err(FrameError::Truncated { .. }), Err(e)) => {
                prop_assert!(matches!(e, FrameError::Truncated { .. }), "{e:?}");
            }
            (w, c) => prop_assert!(false, "whole {w:?}, chunked {c:?}"),
        }
    }

    #[test]
    fn declared_lengths_over_the_maximum_are_refused_whatever_follows(
        len in (MAX as u32 + 1)..=u32::MAX,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let refused = matches!(frame::decode(&bytes, MAX), Err(FrameError::TooLarge { .. }));
        prop_assert!(refused);
    }
}

#[test]
fn boundary_lengths_zero_max_plus_one_and_all_ones() {
    assert!(matches!(
        frame::decode(&[0, 0, 0, 0], MAX),
        Ok(Decoded::Frame { consumed: 4, .. })
    ));
    let over = ((MAX as u32) + 1).to_be_bytes();
    assert!(matches!(
        frame::decode(&over, MAX),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(matches!(
        frame::decode(&[0xFF; 4], MAX),
        Err(FrameError::TooLarge { .. })
    ));
    // An empty body is a valid (all-default) Message.
    assert_eq!(wire::decode(&[]).unwrap(), Message::default());
}

proptest! {
    /// The in-place reading of a change notice agrees with prost's on every notice, and on
    /// arbitrary bytes it never panics: it reads what prost reads, or refuses.
    #[test]
    fn change_notices_read_in_place_agree_with_prost(
        tables in proptest::collection::vec("[a-z*]{0,8}", 0..4),
        keys in proptest::collection::vec("\\PC{0,12}", 0..4),
        index in any::<u64>(),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        use prost::Message as _;
        use protocol::proto::{ChangeNotice, TablesChanged};
        let notice = TablesChanged { tables, commit_index: index, keys };
        let bytes = notice.encode_to_vec();
        let view = ChangeNotice::new(&bytes).unwrap();
        prop_assert_eq!(view.tables().collect::<Vec<_>>(), notice.tables.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(view.keys().collect::<Vec<_>>(), notice.keys.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(view.commit_index(), index);
        if let Ok(view) = ChangeNotice::new(&junk) {
            if let Ok(decoded) = TablesChanged::decode(&junk[..]) {
                prop_assert_eq!(view.keys().collect::<Vec<_>>(), decoded.keys.iter().map(String::as_str).collect::<Vec<_>>());
                prop_assert_eq!(view.commit_index(), decoded.commit_index);
            }
        }
    }
}
