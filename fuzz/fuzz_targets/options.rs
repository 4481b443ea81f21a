//! The `options` startup parameter's reader (`protocol::options::parse`), fed any text a
//! client could send: it must never panic, and every setting it returns has a name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(settings) = pgmux::protocol::options::parse(&text) {
        for (name, _) in settings {
            assert!(!name.is_empty(), "a setting without a name from {text:?}");
            assert!(!name.contains('-'), "dashes are read as underscores: {name:?}");
        }
    }
});
