//! Layer writing throughput: a generated tree (default 10,000 files,
//! 500 MB, in 100 directories; a mix of text-like, binary-like and
//! incompressible content) written as a gzip and a zstd layer with one
//! thread and with every core, to a sink. Prints MB/s of uncompressed tar,
//! the compression ratio, and whether the digests match across thread
//! counts.
//!
//! ```text
//! cargo bench -p executor --bench layer_write
//! LAYER_BENCH_MB=100 LAYER_BENCH_FILES=2000 cargo bench -p executor --bench layer_write
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use executor::image::layer::{
    Compression, LayerInfo, WriteOptions, default_threads, layer_from_dir, write_layer,
};

/// xorshift64: fast, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills `out` with content of one of three kinds.
fn fill(rng: &mut Rng, words: &[Vec<u8>], out: &mut Vec<u8>, len: usize) {
    out.clear();
    match rng.below(20) {
        // Text-like: words from a small vocabulary (compresses about 3x).
        0..=11 => {
            while out.len() < len {
                let word = &words[usize::try_from(rng.below(words.len() as u64)).unwrap()];
                out.extend_from_slice(word);
                out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
            }
        }
        // Binary-like: runs and small values (compresses about 2x).
        12..=16 => {
            while out.len() < len {
                let run = 1 + rng.below(16);
                let byte = u8::try_from(rng.below(64)).unwrap();
                for _ in 0..run {
                    out.push(byte);
                }
            }
        }
        // Already compressed: random bytes.
        _ => {
            while out.len() < len {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
    }
    out.truncate(len);
}

fn make_tree(root: &Path, files: usize, total: usize) -> io::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let words: Vec<Vec<u8>> = (0..512)
        .map(|_| {
            let len = 2 + rng.below(10);
            (0..len)
                .map(|_| b'a' + u8::try_from(rng.below(26)).unwrap())
                .collect()
        })
        .collect();
    // Skewed sizes: many small files, a few large ones, scaled to `total`.
    let weights: Vec<u64> = (0..files)
        .map(|_| {
            let w = 1 + rng.below(1000);
            w * w
        })
        .collect();
    let sum: u64 = weights.iter().sum();
    let mut buf = Vec::new();
    let mut written = 0usize;
    for (i, weight) in weights.iter().enumerate() {
        let dir = root.join(format!("dir{:03}", i % 100));
        if i < 100 {
            fs::create_dir_all(&dir)?;
        }
        let len = if i + 1 == files {
            total - written
        } else {
            usize::try_from(u128::from(*weight) * total as u128 / u128::from(sum)).unwrap()
        };
        fill(&mut rng, &words, &mut buf, len);
        fs::File::create(dir.join(format!("file{i:05}")))?.write_all(&buf)?;
        written += len;
    }
    Ok(())
}

fn run(
    entries: &[executor::image::LayerEntry],
    compression: Compression,
    threads: usize,
) -> (LayerInfo, f64) {
    let start = Instant::now();
    let info = write_layer(
        entries.to_vec(),
        compression,
        None,
        threads,
        io::sink(),
        &WriteOptions::default(),
    )
    .expect("writing the layer");
    (info, start.elapsed().as_secs_f64())
}

#[allow(clippy::cast_precision_loss)]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() -> io::Result<()> {
    let total_mb = env_usize("LAYER_BENCH_MB", 500);
    let files = env_usize("LAYER_BENCH_FILES", 10_000);
    let cores = default_threads();
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    make_tree(dir.path(), files, total_mb * 1_000_000)?;
    println!(
        "tree: {files} files, {total_mb} MB in {:.1}s (cores: {cores})",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let entries = layer_from_dir(dir.path()).expect("walking the tree");
    println!(
        "layer_from_dir: {} entries in {:.3}s",
        entries.len(),
        start.elapsed().as_secs_f64()
    );
    // Warm the page cache so every run reads from memory.
    run(&entries, Compression::Uncompressed, 1);
    let (plain, secs) = run(&entries, Compression::Uncompressed, 1);
    println!(
        "{:<13} {:>2} thread(s): {:>7.1} MB/s  ({:.0} MB tar, hashing only)",
        "uncompressed",
        1,
        mb(plain.size) / secs,
        mb(plain.size)
    );

    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    for compression in [Compression::Gzip, Compression::Zstd] {
        let mut digests = Vec::new();
        for &threads in &thread_counts {
            let (info, secs) = run(&entries, compression, threads);
            println!(
                "{:<13} {:>2} thread(s): {:>7.1} MB/s  ({:.0} MB -> {:.0} MB, ratio {:.2})",
                compression.to_string(),
                threads,
                mb(info.uncompressed_size) / secs,
                mb(info.uncompressed_size),
                mb(info.size),
                mb(info.uncompressed_size) / mb(info.size),
            );
            assert_eq!(info.diff_id, plain.diff_id);
            digests.push(info.digest);
        }
        println!(
            "{:<13} digest is the same for every thread count: {}",
            compression.to_string(),
            digests.windows(2).all(|w| w[0] == w[1])
        );
    }
    Ok(())
}
