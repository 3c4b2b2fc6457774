//! The on-disk record format shared by the journal and the repository:
//! `[len: u32 LE][crc32 of payload: u32 LE][payload]`.
//!
//! Decoding bounds `len` by [`MAX_FRAME`] before allocating and checks the
//! CRC, so a torn or damaged record is reported, never trusted.

use std::io::{self, Read, Write};

/// The largest payload a frame may carry (64 MiB): larger than any batch of
/// version records the uploader builds, small enough that a damaged length
/// field cannot make a reader allocate without bound.
pub const MAX_FRAME: usize = 64 << 20;

/// Why a frame did not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the header or the announced length.
    #[error("truncated record at offset {offset}")]
    Truncated {
        /// Offset of the record's start.
        offset: u64,
    },
    /// The length field is over [`MAX_FRAME`].
    #[error("record at offset {offset} announces {len} bytes (over the limit)")]
    TooLong {
        /// Offset of the record's start.
        offset: u64,
        /// The announced length.
        len: u64,
    },
    /// The payload does not match its CRC.
    #[error("record at offset {offset} fails its checksum")]
    Checksum {
        /// Offset of the record's start.
        offset: u64,
    },
    /// Reading failed.
    #[error("reading record at offset {offset}: {source}")]
    Io {
        /// Offset of the record's start.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Header size in bytes.
pub const HEADER: usize = 8;

/// Append a frame holding `payload` to `out`.
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    let start = begin(out);
    out.extend_from_slice(payload);
    finish(out, start);
}

/// Start a frame at the end of `out`: push a header placeholder and return
/// where the frame starts. Append the payload, then call [`finish`].
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    start
}

/// Fill in the header of the frame begun at `start` (everything after its
/// header is the payload), so a record is encoded with no extra copy.
pub fn finish(out: &mut [u8], start: usize) {
    let payload = &out[start + HEADER..];
    assert!(payload.len() <= MAX_FRAME, "frame payload over MAX_FRAME");
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + HEADER].copy_from_slice(&crc);
}

/// A frame holding `payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + HEADER);
    encode_into(&mut v, payload);
    v
}

/// Write one frame.
pub fn write<W: Write>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(payload))
}

/// Decode the frame at the start of `buf`; returns the payload and the bytes
/// consumed. `offset` is only used in errors.
pub fn decode(buf: &[u8], offset: u64) -> Result<(&[u8], usize), FrameError> {
    if buf.len() < HEADER {
        return Err(FrameError::Truncated { offset });
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(FrameError::TooLong {
            offset,
            len: len as u64,
        });
    }
    let payload = buf
        .get(HEADER..HEADER + len)
        .ok_or(FrameError::Truncated { offset })?;
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Checksum { offset });
    }
    Ok((payload, HEADER + len))
}

/// Read one frame from `r`. `Ok(None)` at a clean end of stream.
pub fn read<R: Read>(r: &mut R, offset: u64) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { offset }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(FrameError::Io { offset, source }),
        }
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(FrameError::TooLong {
            offset,
            len: len as u64,
        });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated { offset }
        } else {
            FrameError::Io { offset, source: e }
        }
    })?;
    if crc32fast::hash(&payload) != crc {
        return Err(FrameError::Checksum { offset });
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"first");
        encode_into(&mut buf, b"second record");
        let (p, n) = decode(&buf, 0).unwrap();
        assert_eq!(p, b"first");
        let (p2, _) = decode(&buf[n..], n as u64).unwrap();
        assert_eq!(p2, b"second record");

        let mut r = &buf[..];
        assert_eq!(read(&mut r, 0).unwrap().unwrap(), b"first");
        assert_eq!(read(&mut r, 0).unwrap().unwrap(), b"second record");
        assert!(read(&mut r, 0).unwrap().is_none());

        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert!(matches!(decode(&bad, 0), Err(FrameError::Checksum { .. })));
        assert!(matches!(
            decode(&buf[..12], 0),
            Err(FrameError::Truncated { .. })
        ));
        let mut huge = buf.clone();
        huge[3] = 0xff;
        assert!(matches!(decode(&huge, 0), Err(FrameError::TooLong { .. })));
        assert!(matches!(
            read(&mut &huge[..], 0),
            Err(FrameError::TooLong { .. })
        ));
    }
}
