//! Single-core speed of sealing, opening and keyed chunk ids, on 256 MiB
//! in 256 KiB records (about the default average chunk, 311 KiB stored).
//!
//! `cargo run -p rewind-crypto --example speed`. In the dev profile the
//! workspace builds dependencies at opt-level 2, and the cipher's inner
//! loops are in them, so this approximates a release build; the number
//! that counts is the ingest benchmark's, once the repository seals.

use std::time::Instant;

use rewind_crypto::{Aead, MasterKey, RecordKind, RepoId, Sealer};

/// 256 MiB: long enough that a run takes seconds, short enough for a
/// shared machine.
const TOTAL: usize = 256 << 20;
const RECORD: usize = 256 << 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let master = MasterKey::generate()?;
    let record: Vec<u8> = (0..RECORD).map(|i| (i * 31 + i / 7) as u8).collect();
    let n = TOTAL / RECORD;
    let mib = (TOTAL >> 20) as f64;
    for aead in [Aead::XChaCha20Poly1305, Aead::Aes256GcmSubkey] {
        let (seal, open) = seal_and_open(&master.sealer(RepoId([1; 16]), aead), &record)?;
        println!("seal ({:18}) {:8.0} MiB/s", aead.name(), mib / seal);
        println!("open ({:18}) {:8.0} MiB/s", aead.name(), mib / open);
    }

    let key = master.chunk_id_key();
    let t = Instant::now();
    let mut x = 0u8;
    for _ in 0..n {
        x ^= key.chunk_id(&record)[0];
    }
    let keyed = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for _ in 0..n {
        x ^= blake3::hash(&record).as_bytes()[0];
    }
    let plain = t.elapsed().as_secs_f64();

    println!("keyed blake3 chunk id            {:8.0} MiB/s", mib / keyed);
    println!(
        "plain blake3 (today's id)        {:8.0} MiB/s   ({x})",
        mib / plain
    );
    Ok(())
}

/// Seconds to seal, then to open, [`TOTAL`] bytes in `record`s.
fn seal_and_open(sealer: &Sealer, record: &[u8]) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let n = TOTAL / RECORD;
    // Each sealed record is dropped before the next is made, as a pack
    // writer does: the allocator reuses the memory, so the loop measures
    // the cipher and one copy, not the kernel's first touch of 256 MiB.
    let t = Instant::now();
    let mut last = Vec::new();
    for i in 0..n {
        last = sealer.seal(RecordKind::Chunk, &i.to_le_bytes(), record)?;
    }
    let seal = t.elapsed().as_secs_f64();

    let name = (n - 1).to_le_bytes();
    let t = Instant::now();
    for _ in 0..n {
        let back = sealer.open(RecordKind::Chunk, &name, &last)?;
        assert_eq!(back.len(), RECORD);
    }
    Ok((seal, t.elapsed().as_secs_f64()))
}
