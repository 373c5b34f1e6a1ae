//! The data plane's HTTP/1.1 upstream client on arbitrary response bytes: it never panics, and
//! it decodes the same response however the bytes arrive (all at once, split at any point, or
//! one byte at a time), so no framing decision depends on where a read happened to end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_data_plane::h1::decode;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let is_head = control & 1 == 1;
    let whole = decode(&[bytes], is_head);
    let at = usize::from(control >> 1) * bytes.len() / 128;
    let (a, b) = bytes.split_at(at.min(bytes.len()));
    let split = decode(&[a, b], is_head);
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    let trickled = decode(&bytewise, is_head);
    for (how, other) in [("split", split), ("byte by byte", trickled)] {
        match (&whole, &other) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "{how}"),
            (Err(_), Err(_)) => {}
            _ => panic!("at once: {whole:?}; {how}: {other:?}"),
        }
    }
});
