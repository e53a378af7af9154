//! The gzip block format of layers: gzp's mgzip (the tar stream cut into
//! 128 KiB blocks, each deflated by libdeflate into gzip members of its
//! own, see [`super::write_layer`]), except that the parts of a block
//! deflate cannot shrink are stored as they are, without first being
//! searched for matches that are not there.
//!
//! Layers often hold data already compressed (archives, images, wheels,
//! `/dev/urandom` output in a test): libdeflate at level 6 spends about a
//! millisecond on each 128 KiB of such data, on a second core that the
//! build's own commands want, only to emit stored deflate blocks in the
//! end. Such data mostly comes as files among others (a tar stream of a
//! source tree with its images and archives), so each block is looked at
//! in granules of 8 KiB, and a granule is incompressible when two cheap
//! checks say so (zstd makes the same kind of decision internally; gzp and
//! libdeflate have no hook for it, hence this format spec around gzp's own
//! mgzip encoder):
//! - its bytes are spread so evenly that Huffman codes could save at most
//!   1.25% (order-0 entropy of 7.9 bits a byte or more: the zeros of one
//!   tar header in a granule of random bytes bring it below), and
//! - no 8-byte sequence comes back within deflate's 32 KiB window (looking
//!   back into the block before the granule too) often enough to cover 4%
//!   of it (any repeat of 15 bytes or more is seen).
//!
//! A block is then written as one gzip member per run of neighbouring
//! granules of the same kind: deflated at the layer's level, or stored.
//! A block all of one kind is one member, as gzp's mgzip writes it. So a
//! stored run is at most about 5% larger than level 6 would have made it;
//! the runs deflate meets are the ones it can shrink, and meets them with
//! less of the window behind them than in one member, which cost 0.1% of
//! the layer on the bench's source tree (10,000 files, 500 MiB, a third
//! random): 445.99 MB against 446.35 MB with whole blocks, for 30% less
//! deflate time.
//!
//! A stored run is "compressed" at libdeflate's level 0, which writes the
//! stored blocks level 6 would have written for it: for random data the
//! bytes, and so the digest, are those libdeflate's level 6 gives (a test
//! checks it). The runs depend on the block's bytes only, so the output
//! stays a function of the data whatever the thread count. A reader of
//! multi-member gzip (every one, see [`super::write_layer`]) sees the same
//! stream; only mgzip's own block index would count more members.

use std::sync::OnceLock;

use bytes::Bytes;
use gzp::check::PassThroughCheck;
use gzp::{Compression, FormatSpec, GzpError};
use libdeflater::{CompressionLvl, Compressor};

/// The size of the parts of a block judged one by one.
const GRANULE: usize = 8 * 1024;
/// Parts shorter than this are not judged on their own: too few bytes for
/// the entropy estimate to mean much. A short block is deflated; a short
/// last granule goes with the one before it.
const MIN_CHECKED: usize = 4096;
/// Order-0 entropy, in bits a byte, from which Huffman coding saves too
/// little to matter (at most 1.25%).
const EVEN_ENTROPY_BITS: f64 = 7.9;
/// Deflate's window.
const WINDOW: usize = 32 * 1024;
/// Repeats must cover this share of a granule (per mille) for it to be
/// deflated. A tar header and the zeros that pad a file's last record
/// count as repeats.
const REPEATS_PER_MILLE: usize = 40;

/// gzp's mgzip format, storing incompressible runs (see the module).
#[derive(Clone, Copy, Debug)]
pub(super) struct StoringMgzip;

/// A compression thread's compressors: at the layer's level, and at level
/// 0 for incompressible runs.
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
        // either way, so a stored run's member differs from a deflated
        // one only in its deflate data.
        if compression_level.level() == 0 {
            return gzp::mgzip::compress(input, &mut encoder.level, compression_level);
        }
        let mut out = Vec::new();
        for run in runs(input) {
            let compressor = if run.stored {
                &mut encoder.stored
            } else {
                &mut encoder.level
            };
            let member =
                gzp::mgzip::compress(&input[run.start..run.end], compressor, compression_level)?;
            // The first member is the output (a block of one kind: the
            // only one), the others follow it.
            if out.is_empty() {
                out = member;
            } else {
                out.extend_from_slice(&member);
            }
        }
        Ok(out)
    }

    fn header(&self, _compression_level: Compression) -> Vec<u8> {
        Vec::new()
    }

    fn footer(&self, _check: &PassThroughCheck) -> Vec<u8> {
        Vec::new()
    }
}

/// A part of a block written as one gzip member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) start: usize,
    pub(super) end: usize,
    /// Incompressible: stored, not deflated.
    pub(super) stored: bool,
}

/// `block` cut into runs of neighbouring granules of the same kind (see
/// the module), in order, covering it; one run when it is all one kind.
pub(super) fn runs(block: &[u8]) -> Vec<Run> {
    let whole = |stored| {
        vec![Run {
            start: 0,
            end: block.len(),
            stored,
        }]
    };
    if block.len() < MIN_CHECKED {
        return whole(false);
    }
    // Granule bounds; a short last one joins the one before it.
    let mut bounds: Vec<usize> = (0..block.len()).step_by(GRANULE).collect();
    if block.len() - bounds[bounds.len() - 1] < MIN_CHECKED && bounds.len() > 1 {
        bounds.pop();
    }
    bounds.push(block.len());
    let granules: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let even: Vec<bool> = granules
        .iter()
        .map(|&(start, end)| entropy_bits(&block[start..end]) >= EVEN_ENTROPY_BITS)
        .collect();
    if even.iter().all(|even| !even) {
        return whole(false);
    }
    // Only a granule of even bytes can still be incompressible: its
    // repeats decide, looking back a window into the block, so that a
    // granule repeating what came before it is seen to.
    let repeated = repeated_bytes(block, &bounds, &even);
    let mut runs: Vec<Run> = Vec::new();
    for ((&(start, end), even), repeated) in granules.iter().zip(even).zip(repeated) {
        let stored = even && repeated * 1000 < (end - start) * REPEATS_PER_MILLE;
        match runs.last_mut() {
            Some(run) if run.stored == stored => run.end = end,
            _ => runs.push(Run { start, end, stored }),
        }
    }
    runs
}

/// Whether deflate could not shrink `block` enough to matter: all of it
/// would be stored (see the module).
#[cfg(test)]
pub(super) fn incompressible(block: &[u8]) -> bool {
    matches!(runs(block)[..], [Run { stored: true, .. }])
}

/// `count * log2(count)` for every count a granule's byte can have, so
/// that a granule's entropy costs 256 lookups, not 256 logarithms.
fn count_log_counts() -> &'static [f64] {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=GRANULE + MIN_CHECKED)
            .map(|count| {
                #[allow(clippy::cast_precision_loss)] // counts are far below 2^52
                let count = count as f64;
                if count > 0.0 {
                    count * count.log2()
                } else {
                    0.0
                }
            })
            .collect()
    })
}

/// `granule`'s order-0 entropy in bits a byte (at most
/// `GRANULE + MIN_CHECKED` bytes).
fn entropy_bits(granule: &[u8]) -> f64 {
    // Four tables, so that neighbouring bytes do not wait on each other's
    // increments.
    let mut counts = [[0u16; 256]; 4];
    let mut quads = granule.chunks_exact(4);
    for quad in &mut quads {
        for (table, &byte) in counts.iter_mut().zip(quad) {
            table[usize::from(byte)] += 1;
        }
    }
    for &byte in quads.remainder() {
        counts[0][usize::from(byte)] += 1;
    }
    let table = count_log_counts();
    let mut sum = 0.0;
    for value in 0..256 {
        let count: usize = counts.iter().map(|table| usize::from(table[value])).sum();
        sum += table[count];
    }
    // H = log2(n) - sum(c log2 c) / n
    #[allow(clippy::cast_precision_loss)] // granule lengths are far below 2^52
    let total = granule.len() as f64;
    total.log2() - sum / total
}

/// About how many bytes of each granule of even bytes (`bounds`: the
/// granules' starts and the block's end; `even`: which are) repeat an
/// 8-byte sequence seen within the window before them; 0 for the others.
/// Every position from a window before such a granule is remembered by
/// the hash of its 8 bytes, every eighth in it is looked up (so a repeat
/// of 15 bytes or more shows), and each found counts for the eight bytes
/// up to the next lookup. About 0.1 ms for a block of them, a tenth of
/// what level 6 takes.
fn repeated_bytes(block: &[u8], bounds: &[usize], even: &[bool]) -> Vec<usize> {
    const BITS: u32 = 15;
    const LOOKUP: usize = 8;
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&block[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    // The last position with each hash, plus one (0: none). A position
    // left stale by a stretch skipped below is farther than the window.
    let mut seen = vec![0u32; 1 << BITS];
    let mut repeated = vec![0; even.len()];
    let slot = |word: u64| {
        usize::try_from(word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)).unwrap_or(0)
    };
    // Positions up to here are in `seen`.
    let mut remembered = 0;
    let last = block.len().saturating_sub(7);
    for (granule, _) in even.iter().enumerate().filter(|(_, even)| **even) {
        let (start, end) = (bounds[granule], bounds[granule + 1].min(last));
        // A multiple of LOOKUP: granules and the window are.
        let mut at = remembered.max(start.saturating_sub(WINDOW));
        let mut look = |at: usize, here: u64, seen: &[u32]| {
            if at >= start {
                // Compared as words, not slices: a call to memcmp here
                // would cost more than the deflate this saves.
                let earlier = seen[slot(here)] as usize;
                if earlier > 0 && at - (earlier - 1) <= WINDOW && word(earlier - 1) == here {
                    repeated[granule] += LOOKUP;
                }
            }
        };
        // Eight positions at a time, their words cut from two loads: this
        // loop is a sixth of a COPY's CPU time when a layer is half
        // compressed files.
        while at + 2 * LOOKUP <= end + 7 && at % LOOKUP == 0 {
            let low = word(at);
            let high = word(at + LOOKUP);
            look(at, low, &seen);
            seen[slot(low)] = u32::try_from(at + 1).unwrap_or(0);
            for shift in 1..LOOKUP {
                let here = (low >> (8 * shift)) | (high << (64 - 8 * shift));
                seen[slot(here)] = u32::try_from(at + shift + 1).unwrap_or(0);
            }
            at += LOOKUP;
        }
        for at in at..end {
            let here = word(at);
            if at % LOOKUP == 0 {
                look(at, here, &seen);
            }
            seen[slot(here)] = u32::try_from(at + 1).unwrap_or(0);
        }
        remembered = remembered.max(end);
    }
    repeated
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Bytes that look random (xorshift), the same every run.
    pub(in crate::image::layer) fn noise(len: usize, mut state: u64) -> Vec<u8> {
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

    /// Text-like bytes: few distinct ones.
    fn text(len: usize, state: u64) -> Vec<u8> {
        noise(len, state)
            .iter()
            .map(|b| b"etaoin shrdlu\n"[usize::from(*b) % 14])
            .collect()
    }

    fn encode(block: &[u8]) -> Vec<u8> {
        let level = Compression::new(6);
        let mut compressors = StoringMgzip.create_compressor(level).unwrap();
        StoringMgzip
            .encode(block, &mut compressors, level, None, false)
            .unwrap()
    }

    fn decode(gzip: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(gzip), &mut out).unwrap();
        out
    }

    #[test]
    fn only_the_incompressible_part_of_a_block_is_stored() {
        // A source file, a compressed one, another source file.
        let block = [text(48 * 1024, 1), noise(48 * 1024, 2), text(32 * 1024, 3)].concat();
        let k = 1024;
        assert_eq!(
            runs(&block),
            [
                Run {
                    start: 0,
                    end: 48 * k,
                    stored: false
                },
                Run {
                    start: 48 * k,
                    end: 96 * k,
                    stored: true
                },
                Run {
                    start: 96 * k,
                    end: 128 * k,
                    stored: false
                },
            ]
        );
        let gzip = encode(&block);
        assert_eq!(decode(&gzip), block);
        // Three members, each read by any gzip reader; about as small as
        // the block deflated whole.
        let whole = deflated(&block, 6).len();
        assert!(
            gzip.len() < whole + 3 * 30 + whole / 100,
            "{} against {whole}",
            gzip.len()
        );
    }

    #[test]
    fn a_block_of_one_kind_is_the_one_member_mgzip_writes() {
        let level = Compression::new(6);
        for block in [text(128 * 1024, 4), noise(128 * 1024, 5)] {
            let mut compressor = Compressor::new(CompressionLvl::new(6).unwrap());
            let mgzip = gzp::mgzip::compress(&block, &mut compressor, level).unwrap();
            assert_eq!(encode(&block), mgzip);
        }
    }

    #[test]
    fn a_granule_repeating_an_earlier_one_in_the_window_is_deflated() {
        let mut block = noise(64 * 1024, 6);
        block.copy_within(8 * 1024..16 * 1024, 40 * 1024);
        let k = 1024;
        assert_eq!(
            runs(&block),
            [
                Run {
                    start: 0,
                    end: 40 * k,
                    stored: true
                },
                Run {
                    start: 40 * k,
                    end: 48 * k,
                    stored: false
                },
                Run {
                    start: 48 * k,
                    end: 64 * k,
                    stored: true
                },
            ]
        );
        assert_eq!(decode(&encode(&block)), block);
    }

    #[test]
    fn a_short_last_granule_goes_with_the_one_before() {
        let block = [text(16 * 1024, 7), noise(10 * 1024, 8)].concat();
        let k = 1024;
        assert_eq!(
            runs(&block),
            [
                Run {
                    start: 0,
                    end: 16 * k,
                    stored: false
                },
                Run {
                    start: 16 * k,
                    end: 26 * k,
                    stored: true
                },
            ]
        );
    }

    #[test]
    fn the_repeat_search_counts_what_a_position_by_position_one_does() {
        // The search as first written: every position, one at a time.
        fn simple(block: &[u8], bounds: &[usize], even: &[bool]) -> Vec<usize> {
            let word = |at: usize| u64::from_le_bytes(block[at..at + 8].try_into().unwrap());
            let mut seen = vec![0u32; 1 << 15];
            let mut repeated = vec![0; even.len()];
            let mut granule = 0;
            for at in 0..block.len().saturating_sub(7) {
                while at >= bounds[granule + 1] {
                    granule += 1;
                }
                let here = word(at);
                let slot = usize::try_from(here.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 49).unwrap();
                let earlier = seen[slot] as usize;
                if even[granule]
                    && at % 8 == 0
                    && earlier > 0
                    && at - (earlier - 1) <= WINDOW
                    && word(earlier - 1) == here
                {
                    repeated[granule] += 8;
                }
                seen[slot] = u32::try_from(at + 1).unwrap();
            }
            repeated
        }
        for (seed, len) in [(21, 128 * 1024), (22, 100_003), (23, 12 * 1024 + 5)] {
            let mut block = noise(len, seed);
            // Copies at distances no multiple of eight, some far.
            block.copy_within(1001..1001 + 3000, 9005);
            if len > 60_000 {
                block.copy_within(20_000..20_100, 53_333);
            }
            block.copy_within(500..600, len - 100);
            let mut bounds: Vec<usize> = (0..len).step_by(GRANULE).collect();
            bounds.push(len);
            for even in [
                vec![true; bounds.len() - 1],
                (0..bounds.len() - 1).map(|g| g % 3 != 1).collect(),
            ] {
                assert_eq!(
                    repeated_bytes(&block, &bounds, &even)
                        .iter()
                        .zip(&even)
                        .map(|(r, e)| if *e { *r } else { 0 })
                        .collect::<Vec<_>>(),
                    simple(&block, &bounds, &even),
                    "seed {seed}"
                );
            }
        }
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
