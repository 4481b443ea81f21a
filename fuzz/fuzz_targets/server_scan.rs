//! `relay::scan_server` over arbitrary server bytes arriving in arbitrary pieces, against a
//! tracker that expects replies to some client messages.
//!
//! Input: one flags byte (bits 0-1: max_prepared_statements 0, 1, 10 or 1000; bits 2-5: how
//! many cut bytes follow; bit 6: how the tracker is primed; bit 7: session state followed), a
//! length byte L, L priming bytes, the cut bytes, then the server's bytes.
//! Priming with bit 6 clear: each byte is the tag of a client message the server was sent
//! (`Tracker::client_message`), 0xff for a query of pgmux's own (`Tracker::own_query`).
//! With bit 6 set: the L bytes are client bytes, scanned once by `scan_client` with the same
//! prepared-statement state, so that replies may be hidden, replaced or answered by pgmux.
//! Each server read is appended to what the last scan left, `end` bytes are dropped, and the
//! scan is repeated while an answer of pgmux's own is due, as in `relay::link`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux_fuzz::{capacity, pieces, Tracker, ClientDriver, Input, ServerDriver, Statements, session_state};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let capacity = capacity(flags);
    let prime_len = input.byte() as usize;
    let prime = input.take(prime_len);
    let cuts = input.take(((flags >> 2) & 0x0f) as usize);
    let bytes = input.rest();

    let mut statements = Statements::default();
    let mut tracker = Tracker::new();
    let mut state = session_state(flags);
    if flags & 0x40 == 0 {
        for &tag in prime {
            match tag {
                0xff => tracker.own_query(),
                tag => tracker.client_message(tag),
            }
        }
    } else {
        let mut client = ClientDriver::default();
        client.feed(prime, &mut tracker, &mut statements.context(capacity), &mut state);
    }

    let mut server = ServerDriver::default();
    for piece in pieces(cuts, bytes) {
        let mut ctx = statements.context(capacity);
        if !server.feed(piece, &mut tracker, &mut ctx, &mut state) {
            break;
        }
    }
    let _ = tracker.verdict();
    let _ = server.client_params.set_statements(&server.server_params);
    let _ = server.server_params.set_statements(&server.client_params);
});
