//! The startup phase's untagged packets (SSLRequest, GSSENCRequest, CancelRequest,
//! StartupMessage): `protocol::startup::packet_len` on the first bytes a client sends, then
//! `protocol::startup::parse` on the packet it frames, as the client login does; and `parse`
//! on the raw input too, whatever its length field says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::protocol::startup::{packet_len, parse, StartupPacket, MAX_STARTUP_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = packet_len(data) {
        assert!((8..=MAX_STARTUP_LEN).contains(&len), "packet_len gave {len}");
        if let Some(packet) = data.get(..len) {
            check(parse(packet));
        }
    }
    check(parse(data));
});

fn check(parsed: Result<StartupPacket, pgmux::protocol::ProtocolError>) {
    if let Ok(StartupPacket::Startup { params, .. }) = parsed {
        for (key, _) in &params {
            assert!(!key.is_empty(), "a startup parameter with an empty name was accepted");
            assert_eq!(
                StartupPacket::param(&params, key).map(|_| ()),
                Some(()),
                "param() does not find a parameter the packet has"
            );
        }
        let _ = StartupPacket::param(&params, "user");
    }
}
