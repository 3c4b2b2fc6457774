//! Framed records and the postcard values inside them, as the journal and
//! the repository decode them: frames, versions, spooled chunks (then their
//! decompression and id check) and last-known path states.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::{EncodedChunk, Version, frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut offset = 0u64;
    while let Ok((payload, used)) = frame::decode(rest, offset) {
        decode_payload(payload);
        rest = &rest[used..];
        offset += used as u64;
    }
    // The raw bytes as a payload too, so the decoders get inputs without
    // having to find a valid CRC first.
    decode_payload(data);
});

fn decode_payload(p: &[u8]) {
    if let Ok(v) = Version::from_bytes(p) {
        let _ = v.to_bytes();
    }
    if let Ok(c) = postcard::from_bytes::<EncodedChunk>(p) {
        let _ = c.decode();
    }
    let _ = postcard::from_bytes::<rewind_journal::PathState>(p);
}
