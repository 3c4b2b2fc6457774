//! Deterministic generation of benchmark data: text-like and random bytes,
//! and the mixed file tree of the ingest and idle benchmarks.
//!
//! Everything is derived from one seed: the same seed and scale give the
//! same tree, byte for byte, whatever the number of threads.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Bumped whenever the generator's output changes, so cached trees of an
/// older generator are not reused.
pub const GENERATOR_VERSION: u32 = 2;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// splitmix64: derives independent seeds from (seed, index).
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A source of text-like bytes: lines of words drawn with a skewed
/// (Zipf-like) distribution from a fixed vocabulary, with some numbers,
/// punctuation and indentation. zstd -3 compresses it about 3:1, like
/// source code or prose.
#[derive(Clone)]
pub struct TextGen {
    words: Arc<Vec<Vec<u8>>>,
    rng: StdRng,
}

/// One line in this many repeats a recent line.
const REPEAT_ONE_IN: u64 = 6;

const SYLLABLES: &[&str] = &[
    "a", "e", "i", "o", "u", "ba", "be", "ca", "co", "de", "di", "fa", "fe", "ga", "go", "ha",
    "he", "in", "ka", "ke", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "no", "nu",
    "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to",
    "tu", "va", "ve", "vi", "za", "ze", "st", "tr", "on", "en", "an", "er", "th", "ch", "sh", "qu",
];

impl TextGen {
    /// A generator whose vocabulary depends only on `vocab_seed` (shared by
    /// all files, as words are shared by documents of one language) and
    /// whose word sequence depends on `seed`.
    pub fn new(vocab_seed: u64, seed: u64) -> TextGen {
        let mut vr = StdRng::seed_from_u64(vocab_seed);
        let words = (0..8192)
            .map(|_| {
                let n = vr.random_range(1..=4);
                let mut w = Vec::new();
                for _ in 0..n {
                    w.extend_from_slice(SYLLABLES[vr.random_range(0..SYLLABLES.len())].as_bytes());
                }
                w
            })
            .collect();
        TextGen {
            words: Arc::new(words),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The same vocabulary with another word sequence (cheap: the
    /// vocabulary is shared).
    pub fn reseed(&self, seed: u64) -> TextGen {
        TextGen {
            words: self.words.clone(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Append exactly `n` bytes of text to `out`.
    pub fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        let end = out.len() + n;
        // Lines written recently; one line in REPEAT_ONE_IN repeats one of
        // them, as code and documents repeat themselves.
        let mut recent = [(0usize, 0usize); 16];
        let mut nrecent = 0usize;
        while out.len() < end {
            let r = self.rng.next_u64();
            let line_start = out.len();
            if nrecent > 0 && r.is_multiple_of(REPEAT_ONE_IN) {
                let (a, b) = recent[(r >> 8) as usize % nrecent.min(recent.len())];
                out.extend_from_within(a..b);
            } else {
                let indent = ((r >> 40) % 4) as usize * 4;
                out.extend(std::iter::repeat_n(b' ', indent));
                let words = 4 + ((r >> 48) % 12) as usize;
                for w in 0..words {
                    let r = self.rng.next_u64();
                    // Skewed rank: u^3 puts most mass on the first words.
                    let u = (r & 0xffff) as f64 / 65536.0;
                    let rank = (u * u * u * self.words.len() as f64) as usize;
                    match (r >> 16) & 0x3f {
                        0 => {
                            let num = (r >> 24) % 100_000;
                            out.extend_from_slice(num.to_string().as_bytes());
                        }
                        1 => out.extend_from_slice(b"="),
                        2 => out.extend_from_slice(b"(),"),
                        _ => out.extend_from_slice(&self.words[rank]),
                    }
                    out.push(if w + 1 == words { b'\n' } else { b' ' });
                }
            }
            recent[nrecent % 16] = (line_start, out.len());
            nrecent += 1;
        }
        out.truncate(end);
    }

    /// `n` bytes of text.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 64);
        self.fill(&mut v, n);
        v
    }
}

/// `n` random (incompressible) bytes from `seed`.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// What kind of content a generated file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text-like, compressible.
    Text,
    /// Random, incompressible.
    Random,
    /// A byte-for-byte copy of another file of the tree (by index).
    Copy(usize),
    /// First half text, second half random.
    Mixed,
}

/// One file of the planned tree.
#[derive(Clone, Debug)]
pub struct PlannedFile {
    /// Path relative to the tree root.
    pub rel: PathBuf,
    /// Content kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Seed of its content.
    pub seed: u64,
}

/// Counts and totals of a generated tree.
#[derive(Clone, Debug, Default)]
pub struct TreeSummary {
    /// Regular files.
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Sum of file sizes.
    pub bytes: u64,
    /// Files and bytes of text-like content.
    pub text: (u64, u64),
    /// Files and bytes of random content.
    pub random: (u64, u64),
    /// Files and bytes that duplicate another file.
    pub copies: (u64, u64),
    /// Size of the one large half-text, half-random file.
    pub big: u64,
}

fn log_uniform(rng: &mut StdRng, lo: u64, hi: u64) -> u64 {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    rng.random_range(a..b).exp().round() as u64
}

fn scaled(n: u64, scale: f64) -> u64 {
    ((n as f64 * scale).round() as u64).max(1)
}

/// Plan the ingest tree at `scale` (1.0: about 50,000 files and 2.1 GiB):
///
/// - 45,000 text files of 1–64 KiB (log-uniform),
/// - 200 text files of 100 KiB–4 MiB,
/// - 4,500 random files of 1–256 KiB and 20 of 1–8 MiB,
/// - 300 exact copies of other files (a few of them large),
/// - one file of 1 GiB × scale, first half text, second half random,
///
/// spread over about 1,250 directories nested up to a dozen deep.
/// Returns the directories (relative, parents first) and the files.
pub fn plan_tree(seed: u64, scale: f64) -> (Vec<PathBuf>, Vec<PlannedFile>) {
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, u64::MAX));
    let mut files = Vec::new();
    fn add(
        files: &mut Vec<PlannedFile>,
        rng: &mut StdRng,
        kind: Kind,
        count: u64,
        lo: u64,
        hi: u64,
    ) {
        for _ in 0..count {
            let size = log_uniform(rng, lo, hi);
            files.push(PlannedFile {
                rel: PathBuf::new(),
                kind,
                size,
                seed: 0,
            });
        }
    }
    add(
        &mut files,
        &mut rng,
        Kind::Text,
        scaled(45_000, scale),
        KIB,
        64 * KIB,
    );
    let mid_start = files.len();
    add(
        &mut files,
        &mut rng,
        Kind::Text,
        scaled(200, scale),
        100 * KIB,
        4 * MIB,
    );
    add(
        &mut files,
        &mut rng,
        Kind::Random,
        scaled(4_500, scale),
        KIB,
        256 * KIB,
    );
    let large_start = files.len();
    add(
        &mut files,
        &mut rng,
        Kind::Random,
        scaled(20, scale),
        MIB,
        8 * MIB,
    );
    let originals = files.len();
    let ncopies = scaled(300, scale) as usize;
    for i in 0..ncopies {
        let src = match i {
            0..3 => rng.random_range(mid_start..large_start),
            3..5 => rng.random_range(large_start..originals),
            _ => rng.random_range(0..originals),
        };
        files.push(PlannedFile {
            rel: PathBuf::new(),
            kind: Kind::Copy(src),
            size: files[src].size,
            seed: 0,
        });
    }
    files.push(PlannedFile {
        rel: PathBuf::new(),
        kind: Kind::Mixed,
        size: ((GIB as f64 * scale) as u64).max(MIB),
        seed: 0,
    });

    // Directories: a random recursive tree (depth grows like ln n).
    let ndirs = (files.len() / 40).max(4);
    let vocab = TextGen::new(seed, derive_seed(seed, u64::MAX - 1));
    let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
    for i in 1..ndirs {
        let parent = dirs[rng.random_range(0..dirs.len())].clone();
        let w = String::from_utf8_lossy(&vocab.words[rng.random_range(0..vocab.words.len())])
            .into_owned();
        dirs.push(parent.join(format!("{w}-{i:04}")));
    }
    for (i, f) in files.iter_mut().enumerate() {
        let d = &dirs[rng.random_range(0..dirs.len())];
        let w = String::from_utf8_lossy(&vocab.words[rng.random_range(0..vocab.words.len())])
            .into_owned();
        let ext = match f.kind {
            Kind::Text => "txt",
            Kind::Random => "bin",
            Kind::Copy(_) => "copy",
            Kind::Mixed => "img",
        };
        f.rel = d.join(format!("{w}-{i:05}.{ext}"));
        f.seed = derive_seed(seed, i as u64);
    }
    // The big file sits at the top, where people look for it.
    if let Some(last) = files.last_mut() {
        last.rel = PathBuf::from("big-1.img");
    }
    dirs.remove(0);
    (dirs, files)
}

/// Summarize a plan.
pub fn summarize(dirs: &[PathBuf], files: &[PlannedFile]) -> TreeSummary {
    let mut s = TreeSummary {
        dirs: dirs.len() as u64 + 1,
        ..Default::default()
    };
    for f in files {
        s.files += 1;
        s.bytes += f.size;
        let slot = match f.kind {
            Kind::Text => &mut s.text,
            Kind::Random => &mut s.random,
            Kind::Copy(_) => &mut s.copies,
            Kind::Mixed => {
                s.big = f.size;
                continue;
            }
        };
        slot.0 += 1;
        slot.1 += f.size;
    }
    s
}

/// Write one planned file's content to `path` (streaming for large files).
fn write_file(root: &Path, vocab: &TextGen, files: &[PlannedFile], f: &PlannedFile) -> Result<()> {
    let path = root.join(&f.rel);
    let content_of = |f: &PlannedFile| -> Vec<u8> {
        match f.kind {
            Kind::Text => vocab.reseed(f.seed).bytes(f.size as usize),
            _ => random_bytes(f.seed, f.size as usize),
        }
    };
    match f.kind {
        Kind::Text | Kind::Random => {
            fs::write(&path, content_of(f)).with_context(|| path.display().to_string())?;
        }
        Kind::Copy(src) => {
            fs::write(&path, content_of(&files[src]))
                .with_context(|| path.display().to_string())?;
        }
        Kind::Mixed => {
            let mut w = BufWriter::with_capacity(
                8 << 20,
                File::create(&path).with_context(|| path.display().to_string())?,
            );
            let half = f.size / 2;
            let block = 8 * MIB;
            let mut text = vocab.reseed(f.seed);
            let mut rnd = StdRng::seed_from_u64(f.seed ^ 1);
            let mut buf = Vec::with_capacity(block as usize + 64);
            let mut done = 0;
            while done < f.size {
                let n = block.min(if done < half {
                    half - done
                } else {
                    f.size - done
                });
                buf.clear();
                if done < half {
                    text.fill(&mut buf, n as usize);
                } else {
                    buf.resize(n as usize, 0);
                    rnd.fill_bytes(&mut buf);
                }
                w.write_all(&buf)?;
                done += n;
            }
            w.flush()?;
        }
    }
    Ok(())
}

/// Write one file of `kind` `Text`, `Random` or `Mixed` (not a copy) at
/// `root/f.rel`, its text drawn from the vocabulary of the tree of `seed`:
/// a file added to the generated tree by a part (the S3 part's 1 GiB file).
pub fn write_extra(root: &Path, seed: u64, f: &PlannedFile) -> Result<()> {
    anyhow::ensure!(
        !matches!(f.kind, Kind::Copy(_)),
        "an extra file cannot be a copy"
    );
    write_file(root, &TextGen::new(seed, 0), &[], f)
}

/// Generate the tree of [`plan_tree`] under `root` (which must not exist),
/// on `threads` threads. Deterministic: the output depends only on `seed`
/// and `scale`.
pub fn generate_tree(root: &Path, seed: u64, scale: f64, threads: usize) -> Result<TreeSummary> {
    let (dirs, files) = plan_tree(seed, scale);
    fs::create_dir_all(root).with_context(|| root.display().to_string())?;
    for d in &dirs {
        fs::create_dir_all(root.join(d))?;
    }
    let threads = threads.max(1);
    let vocab = TextGen::new(seed, 0);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (files, vocab) = (&files, &vocab);
                s.spawn(move || -> Result<()> {
                    for f in files.iter().skip(t).step_by(threads) {
                        write_file(root, vocab, files, f)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("generator thread panicked")?;
        }
        Ok(())
    })?;
    Ok(summarize(&dirs, &files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_the_requested_length_and_is_deterministic() {
        let a = TextGen::new(1, 2).bytes(10_000);
        let b = TextGen::new(1, 2).bytes(10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, b);
        assert_ne!(a, TextGen::new(1, 3).bytes(10_000));
    }

    #[test]
    fn text_compresses_like_text() {
        let t = TextGen::new(1, 2).bytes(1 << 20);
        let c = zstd_len(&t);
        let ratio = t.len() as f64 / c as f64;
        eprintln!("text compresses {ratio:.2}:1");
        assert!((2.0..6.0).contains(&ratio), "ratio {ratio}");
    }

    fn zstd_len(b: &[u8]) -> usize {
        rewind_core::EncodedChunk::encode(b).data.len()
    }

    #[test]
    fn plan_is_deterministic_and_sized() {
        let (d1, f1) = plan_tree(7, 0.01);
        let (d2, f2) = plan_tree(7, 0.01);
        assert_eq!(d1, d2);
        assert_eq!(f1.len(), f2.len());
        assert!(
            f1.iter()
                .zip(&f2)
                .all(|(a, b)| a.rel == b.rel && a.size == b.size)
        );
        let s = summarize(&d1, &f1);
        assert!(s.files > 400 && s.files < 600, "{s:?}");
    }
}
