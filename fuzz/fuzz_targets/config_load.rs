//! The declarative loader on arbitrary text: it never panics, and a config it accepts loads to
//! the same content hash again (loading is deterministic).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = portico_common::load_str(text, &|_| None) {
        let again =
            portico_common::load_str(text, &|_| None).expect("accepted once, accepted again");
        assert_eq!(loaded.snapshot.hash, again.snapshot.hash);
    }
});
