//! The layer's gzip stream: the blocks gzp's `ParCompress` makes of
//! [`StoringMgzip`], byte for byte, but the first [`ON_THE_CALLER`] of
//! them encoded on the calling thread, and gzp's pipeline (a writer thread
//! and a compression thread per core) started only for a layer that has
//! more. Most RUN steps write a layer of a few blocks, on a core the build's
//! commands want: for them the threads cost more than the compression.
//!
//! The blocks are independent (mgzip uses no dictionary) and gzp cuts the
//! stream it is given into blocks of [`BLOCK`] bytes from its start, so a
//! pipeline started on a block boundary writes what it would have written
//! for the whole stream.

use std::io::{self, Write};
use std::thread::Scope;

use gzp::par::compress::{ParCompress, ParCompressBuilder};
use gzp::{Compression, FormatSpec, GzpError, ZWriter};

use super::blocks::{Compressors, StoringMgzip};

/// gzp's block size for the format.
pub(super) const BLOCK: usize = <StoringMgzip as FormatSpec>::DEFAULT_BUFSIZE;

/// Blocks encoded on the calling thread before gzp's pipeline starts.
pub(super) const ON_THE_CALLER: usize = 8;

/// See the module. Write to it, then [`Mgzip::finish`] it (which must be
/// called, as for gzp's writer, unless a write failed).
pub(super) struct Mgzip<'scope, 'env, W: Write + Send + 'scope> {
    state: State<'scope, W>,
    scope: &'scope Scope<'scope, 'env>,
    level: u32,
    threads: usize,
}

enum State<'scope, W: Write + Send + 'scope> {
    Caller {
        out: W,
        pending: Vec<u8>,
        compressors: Box<Compressors>,
        blocks: usize,
    },
    Pipeline(ParCompress<'scope, StoringMgzip, W>),
    /// Between the two, or after a failed switch.
    Gone,
}

impl<'scope, 'env, W: Write + Send + 'scope> Mgzip<'scope, 'env, W> {
    /// A stream at `level` into `out`, whose pipeline, if it starts, has
    /// `threads` compression threads spawned in `scope`.
    pub(super) fn new(
        out: W,
        level: u32,
        threads: usize,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Result<Self, GzpError> {
        let compressors = StoringMgzip.create_compressor(Compression::new(level))?;
        Ok(Self {
            state: State::Caller {
                out,
                pending: Vec::with_capacity(2 * BLOCK),
                compressors: Box::new(compressors),
                blocks: 0,
            },
            scope,
            level,
            threads,
        })
    }

    /// Writes the last block (gzp writes one, empty, even for an empty
    /// stream) or finishes the pipeline; returns the output.
    pub(super) fn finish(self) -> Result<W, GzpError> {
        let compression = self.compression();
        match self.state {
            State::Caller {
                mut out,
                pending,
                mut compressors,
                ..
            } => {
                let block =
                    StoringMgzip.encode(&pending, &mut compressors, compression, None, true)?;
                out.write_all(&block)?;
                Ok(out)
            }
            State::Pipeline(mut pipeline) => pipeline.finish(),
            State::Gone => Err(GzpError::Io(io::Error::other(
                "the gzip compressor stopped",
            ))),
        }
    }

    fn compression(&self) -> Compression {
        Compression::new(self.level)
    }

    /// Hands the stream over to gzp's pipeline, from the block boundary
    /// `pending` starts on.
    fn start_pipeline(&mut self) -> io::Result<()> {
        let State::Caller { out, pending, .. } = std::mem::replace(&mut self.state, State::Gone)
        else {
            return Ok(());
        };
        let mut pipeline = ParCompressBuilder::<StoringMgzip>::new()
            .num_threads(self.threads.max(1))
            .map_err(io::Error::other)?
            .compression_level(self.compression())
            .from_borrowed_writer(out, self.scope);
        pipeline.write_all(&pending)?;
        self.state = State::Pipeline(pipeline);
        Ok(())
    }
}

impl<'scope, W: Write + Send + 'scope> Write for Mgzip<'scope, '_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let compression = self.compression();
        match &mut self.state {
            State::Pipeline(pipeline) => return pipeline.write(buf),
            State::Gone => return Err(io::Error::other("the gzip compressor stopped")),
            State::Caller {
                out,
                pending,
                compressors,
                blocks,
            } => {
                pending.extend_from_slice(buf);
                // As gzp: a block is cut once more than a block is held,
                // so that the last one is never empty unless all is.
                while pending.len() > BLOCK && *blocks < ON_THE_CALLER {
                    let block = StoringMgzip
                        .encode(&pending[..BLOCK], compressors, compression, None, false)
                        .map_err(io::Error::other)?;
                    out.write_all(&block)?;
                    pending.drain(..BLOCK);
                    *blocks += 1;
                }
                if pending.len() <= BLOCK {
                    return Ok(buf.len());
                }
            }
        }
        self.start_pipeline()?;
        Ok(buf.len())
    }

    /// Nothing: a flush must not end a block early (see `NoFlush`).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text and noise, so that blocks hold both kinds of granule.
    fn data(len: usize) -> Vec<u8> {
        const TEXT: &[u8] = b"fn main() { println!(\"hello\"); }\n";
        let noise = super::super::blocks::tests::noise(len, 0x9e37_79b9_7f4a_7c15);
        (0..len)
            .map(|i| {
                if (i / 20_000) % 2 == 0 {
                    TEXT[i % TEXT.len()]
                } else {
                    noise[i]
                }
            })
            .collect()
    }

    /// gzp's own writer over the whole stream.
    fn by_gzp(input: &[u8], threads: usize) -> Vec<u8> {
        std::thread::scope(|scope| {
            let mut gz = ParCompressBuilder::<StoringMgzip>::new()
                .num_threads(threads)
                .unwrap()
                .compression_level(Compression::new(6))
                .from_borrowed_writer(Vec::new(), scope);
            gz.write_all(input).unwrap();
            gz.finish().unwrap()
        })
    }

    fn by_mgzip(input: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        std::thread::scope(|scope| {
            let mut gz = Mgzip::new(Vec::new(), 6, threads, scope).unwrap();
            for part in input.chunks(chunk.max(1)) {
                gz.write_all(part).unwrap();
            }
            gz.finish().unwrap()
        })
    }

    /// Byte for byte what gzp writes, whether the stream stays on the
    /// calling thread or goes to the pipeline, however it is written.
    #[test]
    fn the_stream_is_gzps_whatever_its_length() {
        let input = data((ON_THE_CALLER + 3) * BLOCK + 17);
        for len in [
            0,
            1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK,
            ON_THE_CALLER * BLOCK,
            ON_THE_CALLER * BLOCK + 1,
            (ON_THE_CALLER + 1) * BLOCK,
            input.len(),
        ] {
            let input = &input[..len];
            let expected = by_gzp(input, 2);
            for (threads, chunk) in [(2, 4096), (1, BLOCK), (3, 100_003), (2, len)] {
                assert!(
                    by_mgzip(input, threads, chunk) == expected,
                    "{len} bytes, {threads} threads, written {chunk} at a time"
                );
            }
        }
    }
}
