//! The takeover protocol's messages (`handover::wire::Message::decode`), as either process reads
//! them from the other: the input cut into reads at fuzzed points, every whole message taken
//! off the buffer, under the limit of either direction. The first byte picks the limit and the
//! read size. Besides panics: a message read must encode back to the very bytes it came from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::handover::wire::{Message, MAX_MESSAGE, MAX_TO_OLD};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let limit = if first & 1 == 0 { MAX_TO_OLD } else { MAX_MESSAGE };
    let step = usize::from(first >> 1).max(1);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match Message::decode(&mut buf, limit) {
                Ok(Some(message)) => {
                    let used = before.len() - buf.len();
                    let mut again = BytesMut::new();
                    message.encode(&mut again);
                    assert_eq!(&again[..], &before[..used], "{} re-encodes differently", message.name());
                    consumed += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(consumed <= input.len());
});
