//! The session-state classifier over arbitrary query text: it never panics, and its glance
//! (the hot path's shortcut) never calls plain what reading the text finds something in,
//! except text the lexer finds broken, which the server refuses whole.
//!
//! Input: one flags byte (bit 0: standard_conforming_strings off), then the query text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::session_state::classify::{plain_at_a_glance, read, Kind};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let standard_strings = flags & 1 == 0;
    let kinds = read(text, standard_strings);
    if plain_at_a_glance(text) {
        for kind in kinds.iter().flatten() {
            assert!(
                matches!(kind, Kind::Plain | Kind::Broken),
                "the glance called {:?} plain, yet reading it finds {kind:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
});
