//! Part 4: what the FastCDC bounds cost, in process: bytes stored after
//! small edits of a large file and of a set of small documents, chunk
//! counts, and chunking speed.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::{
    ChunkId, ChunkRef, Chunker, ChunkerParams, DEFAULT_CHUNKER, DeltaWalk, EncodedChunk, ZSTD_LEVEL,
};

use crate::Config;
use crate::datagen::{TextGen, derive_seed, random_bytes};
use crate::report::{Table, bytes};

const KIB: u32 = 1024;

/// The bounds compared.
pub const PARAMS: [ChunkerParams; 5] = [
    ChunkerParams {
        min: 16 * KIB,
        avg: 64 * KIB,
        max: 256 * KIB,
    },
    ChunkerParams {
        min: 32 * KIB,
        avg: 128 * KIB,
        max: 512 * KIB,
    },
    ChunkerParams {
        min: 64 * KIB,
        avg: 256 * KIB,
        max: 1024 * KIB,
    },
    ChunkerParams {
        min: 128 * KIB,
        avg: 512 * KIB,
        max: 2048 * KIB,
    },
    ChunkerParams {
        min: 512 * KIB,
        avg: 1024 * KIB,
        max: 8192 * KIB,
    },
];

fn label(p: ChunkerParams) -> String {
    let k = |n: u32| {
        if n >= 1024 * KIB {
            format!("{}M", n / (1024 * KIB))
        } else {
            format!("{}K", n / KIB)
        }
    };
    let l = format!("{}/{}/{}", k(p.min), k(p.avg), k(p.max));
    if p == DEFAULT_CHUNKER {
        format!("**{l}** (default)")
    } else {
        l
    }
}

/// Chunk ids of `data`.
fn ids(c: &Chunker, data: &[u8]) -> Result<Vec<(ChunkId, usize)>> {
    let mut v = Vec::new();
    for ch in c.chunks(data) {
        let ch = ch?;
        v.push((ChunkId::of(&ch), ch.len()));
    }
    Ok(v)
}

/// What storing `data` adds to a store that holds `known`: (new chunks,
/// stored bytes of them after compression). `known` gains them.
fn store(c: &Chunker, data: &[u8], known: &mut HashSet<ChunkId>) -> Result<(u64, u64)> {
    let (mut n, mut b) = (0, 0);
    for ch in c.chunks(data) {
        let ch = ch?;
        let id = ChunkId::of(&ch);
        if known.insert(id) {
            n += 1;
            b += EncodedChunk::encode_with_id(id, &ch).data.len() as u64;
        }
    }
    Ok((n, b))
}

/// What storing `new`, the next version of `old`, adds when each new
/// chunk may be stored as a delta against the chunk at the same place in
/// `old` (`DeltaWalk`, as capture does with the embedded repository): the
/// stored bytes. `known` gains the new chunks.
fn store_with_deltas(
    c: &Chunker,
    old: &[u8],
    new: &[u8],
    known: &mut HashSet<ChunkId>,
) -> Result<u64> {
    let mut refs = Vec::new();
    let mut at: HashMap<ChunkId, (usize, usize)> = HashMap::new();
    let mut off = 0;
    for ch in c.chunks(old) {
        let ch = ch?;
        let id = ChunkId::of(&ch);
        refs.push(ChunkRef {
            id,
            len: ch.len() as u32,
        });
        at.entry(id).or_insert((off, ch.len()));
        off += ch.len();
    }
    let mut walk = DeltaWalk::new(&refs);
    let mut b = 0u64;
    for ch in c.chunks(new) {
        let ch = ch?;
        let id = ChunkId::of(&ch);
        let hint = walk.as_mut().and_then(|w| w.next(&id, ch.len() as u32));
        if !known.insert(id) {
            continue;
        }
        let alone = EncodedChunk::encode_with_id(id, &ch);
        let delta = hint.and_then(|h| {
            let (o, l) = at[&h];
            EncodedChunk::encode_delta(id, &ch, h, &old[o..o + l], ZSTD_LEVEL)
        });
        b += match delta {
            Some(d) if d.data.len() < alone.data.len() / 4 * 3 => d.data.len(),
            _ => alone.data.len(),
        } as u64;
    }
    Ok(b)
}

/// The large file and its edited form: 9 inserts of 1–16 bytes at random
/// offsets and one 4 KiB overwrite.
fn big_file(cfg: &Config) -> (Vec<u8>, Vec<u8>, usize) {
    let size = ((1u64 << 30) as f64 * cfg.scale).max((16 << 20) as f64) as usize;
    let orig = random_bytes(derive_seed(cfg.seed, 100), size);
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 101));
    let mut inserts: Vec<(usize, Vec<u8>)> = (0..9)
        .map(|_| {
            let at = rng.random_range(0..size);
            let n = rng.random_range(1..=16);
            (at, (0..n).map(|_| rng.random()).collect())
        })
        .collect();
    inserts.sort();
    let mut edited = Vec::with_capacity(size + 256);
    let mut from = 0;
    for (at, bytes) in &inserts {
        edited.extend_from_slice(&orig[from..*at]);
        edited.extend_from_slice(bytes);
        from = *at;
    }
    edited.extend_from_slice(&orig[from..]);
    let at = rng.random_range(0..edited.len() - 4096);
    let over = random_bytes(derive_seed(cfg.seed, 102), 4096);
    edited[at..at + 4096].copy_from_slice(&over);
    let changed = inserts.iter().map(|(_, b)| b.len()).sum::<usize>() + 4096;
    (orig, edited, changed)
}

/// The documents and their edited forms (10 % of them, each a replacement
/// of about 1 % of its bytes at a random place with new text of 0.5–1.5 %).
fn documents(cfg: &Config) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let n = ((2000.0 * cfg.scale).round() as usize).max(100);
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 200));
    let text = TextGen::new(cfg.seed, 0);
    let docs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let size = rng.random_range(2 * 1024..=50 * 1024);
            text.reseed(derive_seed(cfg.seed, 1000 + i as u64))
                .bytes(size)
        })
        .collect();
    let mut editor = text.reseed(derive_seed(cfg.seed, 201));
    let edited = docs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 == 3)
        .map(|(_, d)| {
            let span = (d.len() / 100).max(1);
            let at = rng.random_range(0..d.len() - span);
            let new_len = rng.random_range(span / 2..=span * 3 / 2).max(1);
            let mut e = d[..at].to_vec();
            editor.fill(&mut e, new_len);
            e.extend_from_slice(&d[at + span..]);
            e
        })
        .collect();
    (docs, edited)
}

/// Run the chunk-size part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    eprintln!("rewind-bench: generating the large file and the documents in memory");
    let (orig, edited, changed) = big_file(cfg);
    let (docs, edited_docs) = documents(cfg);
    let docs_bytes: u64 = docs.iter().map(|d| d.len() as u64).sum();

    let mut ta = Table::new(&[
        "min/avg/max",
        "chunks in file",
        "mean chunk",
        "new chunks after edits",
        "new bytes stored",
        "per edit",
        "per edit, with deltas",
        "chunk+hash speed (1 core)",
    ]);
    let mut tb = Table::new(&[
        "min/avg/max",
        "chunks",
        "stored (zstd) before edits",
        "new chunks after edits",
        "new bytes stored",
        "stored / edited files' size",
        "with deltas",
    ]);
    for p in PARAMS {
        eprintln!("rewind-bench: chunker {}", label(p));
        let c = Chunker::new(p);
        // (a) large file.
        let t = Instant::now();
        let before = ids(&c, &orig)?;
        let speed = orig.len() as f64 / t.elapsed().as_secs_f64() / (1024.0 * 1024.0);
        let mut known: HashSet<ChunkId> = before.iter().map(|(id, _)| *id).collect();
        let mut known_d = known.clone();
        let (new_n, new_b) = store(&c, &edited, &mut known)?;
        let delta_b = store_with_deltas(&c, &orig, &edited, &mut known_d)?;
        ta.row(&[
            label(p),
            before.len().to_string(),
            bytes((orig.len() / before.len().max(1)) as u64),
            new_n.to_string(),
            bytes(new_b),
            bytes(new_b / 10),
            bytes(delta_b / 10),
            format!("{speed:.0} MiB/s"),
        ]);
        // (b) documents.
        let mut known = HashSet::new();
        let (mut n0, mut b0) = (0, 0);
        for d in &docs {
            let (n, b) = store(&c, d, &mut known)?;
            n0 += n;
            b0 += b;
        }
        let mut known_d = known.clone();
        let (mut n1, mut b1) = (0, 0);
        for d in &edited_docs {
            let (n, b) = store(&c, d, &mut known)?;
            n1 += n;
            b1 += b;
        }
        // Edited documents are documents 3, 13, 23, … (see `documents`).
        let mut d1 = 0;
        for (k, d) in edited_docs.iter().enumerate() {
            d1 += store_with_deltas(&c, &docs[3 + 10 * k], d, &mut known_d)?;
        }
        let edited_size: u64 = edited_docs.iter().map(|d| d.len() as u64).sum();
        tb.row(&[
            label(p),
            n0.to_string(),
            bytes(b0),
            n1.to_string(),
            bytes(b1),
            format!("{:.2}", b1 as f64 / edited_size as f64),
            format!("{} ({:.3})", bytes(d1), d1 as f64 / edited_size as f64),
        ]);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "In process (`rewind_core::Chunker` + `EncodedChunk::encode`, zstd level {ZSTD_LEVEL}, blake3), no binary involved. \
         \"With deltas\": each new chunk may instead be stored as a delta against the chunk at the same \
         place in the previous version (`DeltaWalk`, as the agent does with the embedded repository; \
         kept when it saves a quarter).\n\n\
         (a) A {} file of random bytes, then 9 inserts of 1–16 bytes at random offsets and one 4 KiB \
         overwrite ({} bytes changed in all). \"New bytes stored\" = stored size of the chunks of the edited \
         file that the original did not have.\n",
        bytes(orig.len() as u64),
        changed
    );
    s.push_str(&ta.render());
    let _ = writeln!(
        s,
        "\n(b) {} text documents of 2–50 KiB ({} in all); then {} of them (10 %) get an edit of about 1 % \
         of their bytes (a span replaced by 0.5–1.5 % new text).\n",
        docs.len(),
        bytes(docs_bytes),
        edited_docs.len()
    );
    s.push_str(&tb.render());
    s.push_str(
        "\nA document smaller than `min` is one chunk, so an edit stores the whole document again \
         (compressed); with the default (64 KiB minimum) that is every document of this set.\n",
    );
    s.push_str(&compression_by_size(cfg)?);
    s.push_str(&speeds(&orig, cfg)?);
    Ok(s)
}

/// Text-like bytes, `256 MiB × scale` (at least 16 MiB), as in the text
/// half of the ingest tree's large file.
fn text_stream(cfg: &Config) -> Vec<u8> {
    let n = ((256u64 << 20) as f64 * cfg.scale).max((16 << 20) as f64) as usize;
    TextGen::new(cfg.seed, derive_seed(cfg.seed, 300)).bytes(n)
}

/// (c) How well each chunk size compresses a large text file (zstd works
/// per chunk, so small chunks lose context).
fn compression_by_size(cfg: &Config) -> Result<String> {
    let text = text_stream(cfg);
    let mut t = Table::new(&[
        "min/avg/max",
        "chunks",
        "stored (zstd per chunk)",
        "ratio",
        "vs default",
    ]);
    let mut sets = PARAMS.to_vec();
    // borg's default chunker (buzhash 19,23,21,4095): 512 KiB min, 2 MiB
    // target, 8 MiB max; emulated with FastCDC bounds.
    let borg_like = ChunkerParams {
        min: 512 * KIB,
        avg: 2048 * KIB,
        max: 8192 * KIB,
    };
    sets.push(borg_like);
    let mut rows = Vec::new();
    let mut default_stored = 0;
    for p in sets {
        let c = Chunker::new(p);
        let mut known = HashSet::new();
        let (n, b) = store(&c, &text, &mut known)?;
        if p == DEFAULT_CHUNKER {
            default_stored = b;
        }
        rows.push((p, n, b));
    }
    for (p, n, b) in rows {
        let name = if p == borg_like {
            "512K/2M/8M (borg-like)".to_string()
        } else {
            label(p)
        };
        t.row(&[
            name,
            n.to_string(),
            bytes(b),
            format!("{:.3}", text.len() as f64 / b as f64),
            format!("{:+.2} %", 100.0 * (b as f64 / default_stored as f64 - 1.0)),
        ]);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n(c) Compression against chunk size: {} of text-like bytes (the generator of the ingest tree), \
         each chunk compressed on its own as rewind stores it.\n",
        bytes(text.len() as u64)
    );
    s.push_str(&t.render());
    Ok(s)
}

/// (d) Single-core speed of each step of a capture, default bounds.
fn speeds(random: &[u8], cfg: &Config) -> Result<String> {
    let text = text_stream(cfg);
    let c = Chunker::default();
    let mut buf = Vec::new();
    let mib = |n: usize, secs: f64| n as f64 / secs / (1024.0 * 1024.0);
    let mut t = Table::new(&["step (one core, default bounds)", "text-like", "random"]);
    let mut cut = Vec::new();
    let mut hash = Vec::new();
    let mut enc = Vec::new();
    let mut ratio = Vec::new();
    for data in [&text[..], random] {
        let t0 = Instant::now();
        let mut chunks = Vec::new();
        c.for_each(data, &mut buf, |ch| {
            chunks.push(ch.len());
            Ok(())
        })?;
        cut.push(mib(data.len(), t0.elapsed().as_secs_f64()));
        let t0 = Instant::now();
        let mut off = 0;
        let mut ids = Vec::with_capacity(chunks.len());
        for n in &chunks {
            ids.push(ChunkId::of(&data[off..off + n]));
            off += n;
        }
        hash.push(mib(data.len(), t0.elapsed().as_secs_f64()));
        let t0 = Instant::now();
        let mut off = 0;
        let mut stored = 0;
        for (n, id) in chunks.iter().zip(&ids) {
            stored += EncodedChunk::encode_with_id(*id, &data[off..off + n])
                .data
                .len();
            off += n;
        }
        enc.push(mib(data.len(), t0.elapsed().as_secs_f64()));
        ratio.push(data.len() as f64 / stored as f64);
    }
    let f = |v: &[f64], i: usize| format!("{:.0} MiB/s", v[i]);
    t.row(&["FastCDC cut points".to_string(), f(&cut, 0), f(&cut, 1)]);
    t.row(&["blake3 of each chunk".to_string(), f(&hash, 0), f(&hash, 1)]);
    t.row(&[
        "`EncodedChunk::encode_with_id` (zstd, raw if it saves < 1/32)".to_string(),
        f(&enc, 0),
        f(&enc, 1),
    ]);
    t.row(&[
        "compression ratio".to_string(),
        format!("{:.2}", ratio[0]),
        format!("{:.2}", ratio[1]),
    ]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n(d) Single-core speed of the steps of a capture on {} of text-like and {} of random bytes, \
         in memory (no I/O).\n",
        bytes(text.len() as u64),
        bytes(random.len() as u64)
    );
    s.push_str(&t.render());
    Ok(s)
}
