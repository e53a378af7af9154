//! The gzip block format of layers: gzp's mgzip (each 128 KiB block of the
//! tar stream deflated by libdeflate into a gzip member of its own, see
//! [`super::write_layer`]), except that a block deflate cannot shrink is
//! stored as it is, without first being searched for matches that are not
//! there.
//!
//! Layers often hold data already compressed (archives, images, wheels,
//! `/dev/urandom` output in a test): libdeflate at level 6 spends about a
//! millisecond on each such 128 KiB block, on a second core that the
//! build's own commands want, only to emit stored deflate blocks in the
//! end. Two checks, both cheap beside that, say a block is incompressible
//! (zstd makes the same kind of decision internally; gzp and libdeflate
//! have no hook for it, hence this format spec around gzp's own mgzip
//! encoder):
//! - its bytes are spread so evenly that Huffman codes could save at most
//!   1.25% (order-0 entropy of 7.9 bits a byte or more: a tar header's
//!   zeros in a block of random bytes cost about 0.05), and
//! - no 8-byte sequence comes back within deflate's 32 KiB window often
//!   enough to cover 4% of the block (any repeat of 15 bytes or more is
//!   seen).
//!
//! So a stored block is at most about 5% larger than level 6 would have
//! made it, and only such a block: a layer of text or binaries deflates as
//! before, a compressed file inside a layer is stored whole, as deflate
//! would have stored it.
//!
//! Such a block is "compressed" at libdeflate's level 0, which writes the
//! stored blocks level 6 would have written for it: for random data the
//! bytes, and so the digest, are those libdeflate's level 6 gives (a test
//! checks it). The decision depends on the block's bytes only, so the
//! output stays a function of the data whatever the thread count.

use bytes::Bytes;
use gzp::check::PassThroughCheck;
use gzp::{Compression, FormatSpec, GzpError};
use libdeflater::{CompressionLvl, Compressor};

/// Blocks shorter than this are always deflated: too few bytes for the
/// entropy estimate to mean much, and little to save.
const MIN_CHECKED: usize = 4096;
/// Order-0 entropy, in millibits a byte, from which Huffman coding saves
/// too little to matter (at most 1.25%).
const EVEN_ENTROPY_MILLIBITS: f64 = 7900.0;
/// Deflate's window.
const WINDOW: usize = 32 * 1024;
/// Repeats must cover this share of a block (per mille) for it to be
/// deflated. A tar header and the zeros that pad a file's last record
/// count as repeats: a block of random bytes holding the ends of a few
/// files has 3% of them, and stored it is 3% larger than deflated.
const REPEATS_PER_MILLE: usize = 40;

/// gzp's mgzip format, storing incompressible blocks (see the module).
#[derive(Clone, Copy, Debug)]
pub(super) struct StoringMgzip;

/// A compression thread's compressors: at the layer's level, and at level
/// 0 for incompressible blocks.
pub(super) struct Compressors {
    level: Compressor,
    stored: Compressor,
}

impl FormatSpec for StoringMgzip {
    type C = PassThroughCheck;
    type Compressor = Compressors;

    fn new() -> Self {
        StoringMgzip
    }

    fn needs_dict(&self) -> bool {
        false
    }

    fn create_compressor(&self, compression_level: Compression) -> Result<Compressors, GzpError> {
        let level = i32::try_from(compression_level.level()).unwrap_or(i32::MAX);
        let at = |level| {
            CompressionLvl::new(level)
                .map(Compressor::new)
                .map_err(GzpError::LibDeflaterCompressionLvl)
        };
        Ok(Compressors {
            level: at(level)?,
            stored: at(0)?,
        })
    }

    fn encode(
        &self,
        input: &[u8],
        encoder: &mut Compressors,
        compression_level: Compression,
        _dict: Option<&Bytes>,
        _is_last: bool,
    ) -> Result<Vec<u8>, GzpError> {
        // The header's compression flag comes from `compression_level`
        // either way, so a stored block's member differs from a deflated
        // one only in its deflate data.
        let compressor = if compression_level.level() > 0 && incompressible(input) {
            &mut encoder.stored
        } else {
            &mut encoder.level
        };
        gzp::mgzip::compress(input, compressor, compression_level)
    }

    fn header(&self, _compression_level: Compression) -> Vec<u8> {
        Vec::new()
    }

    fn footer(&self, _check: &PassThroughCheck) -> Vec<u8> {
        Vec::new()
    }
}

/// Whether deflate could not shrink `block` enough to matter (see the
/// module).
pub(super) fn incompressible(block: &[u8]) -> bool {
    block.len() >= MIN_CHECKED && entropy_millibits(block) >= EVEN_ENTROPY_MILLIBITS && {
        repeated_bytes(block) * 1000 < block.len() * REPEATS_PER_MILLE
    }
}

/// `block`'s order-0 entropy in millibits a byte.
fn entropy_millibits(block: &[u8]) -> f64 {
    // Four tables, so that neighbouring bytes do not wait on each other's
    // increments.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = block.chunks_exact(4);
    for quad in &mut quads {
        for (table, &byte) in counts.iter_mut().zip(quad) {
            table[usize::from(byte)] += 1;
        }
    }
    for &byte in quads.remainder() {
        counts[0][usize::from(byte)] += 1;
    }
    #[allow(clippy::cast_precision_loss)] // block lengths are far below 2^52
    let total = block.len() as f64;
    let mut entropy = 0.0;
    for value in 0..256 {
        let count: u32 = counts.iter().map(|table| table[value]).sum();
        if count > 0 {
            let share = f64::from(count) / total;
            entropy -= share * share.log2();
        }
    }
    entropy * 1000.0
}

/// About how many bytes of `block` repeat an 8-byte sequence seen within
/// the window before them: every position is remembered by the hash of
/// its 8 bytes, every eighth is looked up (so a repeat of 15 bytes or more
/// shows), and each found counts for the eight bytes up to the next
/// lookup. About 0.1 ms a block, a tenth of what level 6 takes.
fn repeated_bytes(block: &[u8]) -> usize {
    const BITS: u32 = 15;
    const LOOKUP: usize = 8;
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&block[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    // The last position with each hash, plus one (0: none).
    let mut seen = vec![0u32; 1 << BITS];
    let mut repeated = 0;
    for at in 0..block.len().saturating_sub(7) {
        let here = word(at);
        let slot =
            usize::try_from(here.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)).unwrap_or(0);
        if at % LOOKUP == 0 {
            // Compared as words, not slices: a call to memcmp here would
            // cost more than the deflate this saves.
            let earlier = seen[slot] as usize;
            if earlier > 0 && at - (earlier - 1) <= WINDOW && word(earlier - 1) == here {
                repeated += LOOKUP;
            }
        }
        seen[slot] = u32::try_from(at + 1).unwrap_or(0);
    }
    repeated
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that look random (xorshift), the same every run.
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[3]
            })
            .collect()
    }

    fn deflated(block: &[u8], level: i32) -> Vec<u8> {
        let mut compressor = Compressor::new(CompressionLvl::new(level).unwrap());
        let mut out = vec![0; compressor.deflate_compress_bound(block.len())];
        let written = compressor.deflate_compress(block, &mut out).unwrap();
        out.truncate(written);
        out
    }

    #[test]
    fn random_blocks_are_stored_as_level_6_would_store_them() {
        let block = noise(128 * 1024, 0x9E37_79B9_7F4A_7C15);
        assert!(incompressible(&block));
        // The same deflate bytes as before this check existed.
        assert_eq!(deflated(&block, 0), deflated(&block, 6));
    }

    #[test]
    fn blocks_deflate_can_shrink_are_deflated() {
        let random = noise(128 * 1024, 7);
        // Text-like: few distinct bytes.
        let text: Vec<u8> = random
            .iter()
            .map(|b| b"etaoin shrdlu\n"[usize::from(*b) % 14])
            .collect();
        // Even bytes, but a 16 KiB stretch repeated: within the window.
        let repeated: Vec<u8> = random[..16 * 1024].repeat(8);
        // Even bytes with a fifth of the block a copy of an earlier part,
        // at a distance in the window that is no multiple of the lookups'.
        let mut partly = random.clone();
        partly.copy_within(2001..2001 + 24 * 1024, 30003);
        // Runs of one byte between random stretches.
        let mut runs = random.clone();
        for chunk in runs.chunks_mut(4096) {
            chunk[..512].fill(0);
        }
        for (name, block) in [
            ("text", &text),
            ("repeated", &repeated),
            ("partly", &partly),
            ("runs", &runs),
        ] {
            assert!(!incompressible(block), "{name}");
            assert!(
                deflated(block, 6).len() < block.len() * 99 / 100,
                "{name} deflates"
            );
        }
        // Too short to judge.
        assert!(!incompressible(&random[..1000]));
    }

    #[test]
    fn a_repeat_far_outside_the_window_does_not_count() {
        // 64 KiB of noise twice: deflate's window cannot reach back to the
        // first copy, and neither does the check.
        let half = noise(64 * 1024, 11);
        let block = half.repeat(2);
        assert!(incompressible(&block));
        assert!(deflated(&block, 6).len() >= block.len());
    }
}
