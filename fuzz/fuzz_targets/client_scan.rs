//! `relay::scan_client` over arbitrary client bytes arriving in arbitrary pieces.
//!
//! Input: one flags byte (bits 0-1: max_prepared_statements 0, 1, 10 or 1000; bits 2-5: how
//! many cut bytes follow; bit 7: session state followed), the cut bytes (each the length of one
//! read), then the client's bytes.
//! Each read is appended to what the last scan left, the scan's `forward` bytes are dropped, as
//! in `relay::link`; the Passthrough, Tracker and prepared-statement state carry across reads.
//! An error ends the run (errors are fine); a panic, or output that does not frame where the
//! scan says it is, is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux_fuzz::{capacity, pieces, Tracker, ClientDriver, Input, Statements, session_state};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let capacity = capacity(flags);
    let cuts = input.take(((flags >> 2) & 0x0f) as usize);
    let bytes = input.rest();

    let mut statements = Statements::default();
    let mut tracker = Tracker::new();
    let mut state = session_state(flags);
    let mut client = ClientDriver::default();
    for piece in pieces(cuts, bytes) {
        let mut ctx = statements.context(capacity);
        if !client.feed(piece, &mut tracker, &mut ctx, &mut state) {
            break;
        }
    }
    let _ = tracker.verdict();
    let _ = statements.registry.live();
});
