//! The store's extracted layers: `layers/<alg>/<hex>`, each layer of the
//! store unpacked once, in overlay form, to be an overlay lower directory
//! (or a RUN's finished upper directory adopted as one). It owns the
//! per-layer lock that makes one extraction serve every concurrent caller
//! and the clean-up of interrupted ones; the blobs it reads are the
//! store's, checked as they stream.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use executor_cache::oci_layout::{LayoutError, create_dir, lock_exclusive};

use super::{Result, Store, StoreError, read_err, remove_tree, write_err};
use crate::image::apply;
use crate::image::digest::{Algorithm, Digest, HashingReader};

impl Store {
    pub(super) fn layer_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.root().join("layers").join(algorithm.as_str())
    }

    /// Where the extracted copy of the layer with this diffID lives
    /// (whether or not it exists).
    #[must_use]
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id.algorithm()).join(diff_id.hex())
    }

    /// Holds an exclusive `flock` on `layers/<alg>/.<hex>.lock` until
    /// dropped: one extraction of a layer at a time, across processes.
    fn lock_layer(&self, diff_id: &Digest) -> Result<File> {
        let dir = self.layer_dir(diff_id.algorithm());
        create_dir(&dir)?;
        Ok(lock_exclusive(
            &dir.join(format!(".{}.lock", diff_id.hex())),
        )?)
    }

    /// The layer (blob `blob`, diffID `diff_id`) extracted once into
    /// `layers/<alg>/<hex>` in overlay form (whiteouts as 0:0 character
    /// devices, opaque directories by xattr: see
    /// [`WhiteoutMode::Overlay`](apply::WhiteoutMode::Overlay)),
    /// ready to be an overlay lower directory.
    ///
    /// The blob (gzip, zstd, bzip2, xz or plain) is read once: decompressed,
    /// hashed against `diff_id` (and the compressed bytes against `blob`)
    /// and extracted into a directory under `tmp/`, renamed into place only
    /// when all of it matched. A failed extraction removes its directory;
    /// an interrupted one leaves it under `tmp/`, where the next extraction
    /// of that layer removes it. Concurrent callers, in this process or
    /// others, wait for one extraction (a per-layer `flock`) and get the
    /// same directory. Cross-layer hard links are not resolved (no lower
    /// directories are known here): such a link fails the extraction.
    pub fn extracted_layer(&self, diff_id: &Digest, blob: &Digest) -> Result<PathBuf> {
        let dst = self.layer_path(diff_id);
        if dst.is_dir() {
            super::prune::mark_used(&dst);
            return Ok(dst);
        }
        let _lock = self.lock_layer(diff_id)?;
        if dst.is_dir() {
            return Ok(dst);
        }
        let prefix = format!("layer-{}.", diff_id.hex());
        self.remove_leftovers(&prefix);
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(self.tmp_dir())
            .map_err(write_err(&self.tmp_dir()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(write_err(tmp.path()))?;
        let extracted = self.extract_into(diff_id, blob, tmp.path());
        if let Err(err) = &extracted
            && !matches!(err, StoreError::Layout(LayoutError::BlobNotFound { .. }))
        {
            // A blob damaged on disk is removed (`verify_blob` does), so
            // that the next build fetches it again rather than failing on
            // it forever; one that is whole is the image's own fault.
            if let Err(check) = self.verify_blob(blob) {
                tracing::warn!(%blob, error = %check, "the stored blob is damaged: removed, fetched again next time");
            }
        }
        extracted?;
        let dir = tmp.keep();
        Self::rename_layer(&dir, &dst)
    }

    /// Whether the stored blob `digest` can be used as it is rather than
    /// fetched again: it is there with `size` bytes and either its
    /// extracted layer `diff_id` is there (an overlay root reads that, not
    /// the blob, and it was checked against the blob when extracted) or
    /// its content hashes to `digest` (hashed once per process). A blob
    /// found corrupt is removed, so that the caller fetches it again; one
    /// of another size is left for the download to replace.
    #[must_use]
    pub fn has_sound_blob(&self, digest: &Digest, size: u64, diff_id: Option<&Digest>) -> bool {
        if !self.has_blob(digest) {
            return false;
        }
        let stored = fs::metadata(self.blob_path(digest)).map(|m| m.len());
        if !stored.as_ref().is_ok_and(|&len| len == size) {
            tracing::warn!(%digest, "stored blob has the wrong size; downloading it again");
            return false;
        }
        let sound = || self.sound.lock().unwrap_or_else(PoisonError::into_inner);
        if diff_id.is_some_and(|d| self.layer_path(d).is_dir()) || sound().contains(digest) {
            return true;
        }
        match self.verify_blob(digest) {
            Ok(_) => {
                sound().insert(digest.clone());
                true
            }
            Err(error) => {
                tracing::warn!(%digest, %error, "stored blob is damaged; downloading it again");
                false
            }
        }
    }

    /// Applies the stored layer blob `blob` (compressed or not) to the
    /// root filesystem `root`, hashing it as it streams: a blob whose
    /// content is not `blob` is removed (the next build fetches it again)
    /// and reported as [`StoreError::DigestMismatch`], and what was applied
    /// must then be thrown away.
    pub fn apply_blob(
        &self,
        blob: &Digest,
        root: &Path,
        opts: &apply::ApplyOptions,
    ) -> Result<apply::ApplyStats> {
        let blob_path = self.blob_path(blob);
        let mut compressed =
            HashingReader::new(io::BufReader::new(self.open_blob(blob)?), blob.algorithm());
        let applied = apply::apply_layer(&mut compressed, root, opts);
        let drained = io::copy(&mut compressed, &mut io::sink());
        let (_, actual, _) = compressed.finish();
        if drained.is_ok() && actual != *blob {
            if let Err(error) = self.verify_blob(blob) {
                tracing::warn!(%blob, %error, "the stored blob is damaged: removed, fetched again next time");
            }
            return Err(StoreError::DigestMismatch {
                expected: blob.clone(),
                actual,
            });
        }
        let stats = applied.map_err(|source| StoreError::Apply {
            blob: blob.clone(),
            source,
        })?;
        drained.map_err(read_err(&blob_path))?;
        Ok(stats)
    }

    /// Extracts the blob `blob` into `dir`, checking it against `blob` and
    /// `diff_id`.
    fn extract_into(&self, diff_id: &Digest, blob: &Digest, dir: &Path) -> Result<()> {
        let blob_path = self.blob_path(blob);
        let extract_err = |source| StoreError::Extract {
            blob: blob.clone(),
            diff_id: diff_id.clone(),
            source,
        };
        let privileged = rustix::process::geteuid().is_root();
        let opts = apply::ApplyOptions {
            root_is_privileged: privileged,
            preserve_ownership: true,
            ignore_paths: Vec::new(),
        };
        let mode = apply::WhiteoutMode::overlay(Vec::new());
        if let Some(whole) = self.inflate_whole(blob)? {
            // In memory, the tar's diffID is hashed on a thread of its own
            // while it is applied.
            let (applied, actual) = std::thread::scope(|scope| {
                let hashed = scope.spawn(|| Digest::of(diff_id.algorithm(), &whole));
                let applied = apply::apply_tar_with(&mut whole.as_slice(), dir, &opts, &mode);
                let actual = hashed
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (applied, actual)
            });
            applied.map_err(extract_err)?;
            return check_diff_id(blob, diff_id, actual);
        }
        // Streamed: the tar is hashed as it is applied, read to its end.
        let mut compressed = HashingReader::new(self.open_blob(blob)?, blob.algorithm());
        let stream = apply::decompress(&mut compressed).map_err(extract_err)?;
        let mut tar = HashingReader::new(stream, diff_id.algorithm());
        apply::apply_tar_with(&mut tar, dir, &opts, &mode).map_err(extract_err)?;
        io::copy(&mut tar, &mut io::sink()).map_err(read_err(&blob_path))?;
        let (_, actual, _) = tar.finish();
        io::copy(&mut compressed, &mut io::sink()).map_err(read_err(&blob_path))?;
        let (_, blob_actual, _) = compressed.finish();
        if blob_actual != *blob {
            return Err(StoreError::DigestMismatch {
                expected: blob.clone(),
                actual: blob_actual,
            });
        }
        check_diff_id(blob, diff_id, actual)
    }

    /// The tar in `blob` when it is a gzip stream of one member (as
    /// registries' layers mostly are) small enough to inflate in memory,
    /// with its digest checked unless this process hashed it whole
    /// already (a download just did); `None` when it is not, and the
    /// caller streams it. libdeflate inflates a buffer twice as fast as
    /// zlib-rs streams it, and a base image's layers are on the path of
    /// the first step; it takes only a whole member, and tells not how
    /// much of the buffer it read, so the stream's last CRC must be the
    /// output's as well: a stream of several members (the store's own
    /// layers) is streamed.
    fn inflate_whole(&self, blob: &Digest) -> Result<Option<Vec<u8>>> {
        const MAX_BLOB: u64 = 16 << 20;
        const MAX_TAR: usize = 64 << 20;
        let path = self.blob_path(blob);
        let mut file = self.open_blob(blob)?;
        let size = file.metadata().map_err(read_err(&path))?.len();
        if !(18..=MAX_BLOB).contains(&size) {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        io::Read::read_to_end(&mut file, &mut data).map_err(read_err(&path))?;
        let Some(trailer) = data
            .get(data.len().saturating_sub(8)..)
            .filter(|_| data.starts_with(&[0x1f, 0x8b]))
        else {
            return Ok(None);
        };
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let length = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        let Some(length) = usize::try_from(length).ok().filter(|&l| l <= MAX_TAR) else {
            return Ok(None);
        };
        let sound = || self.sound.lock().unwrap_or_else(PoisonError::into_inner);
        if !sound().contains(blob) {
            let actual = Digest::of(blob.algorithm(), &data);
            if actual != *blob {
                if let Err(error) = self.verify_blob(blob) {
                    tracing::warn!(%blob, %error, "the stored blob is damaged: removed, fetched again next time");
                }
                return Err(StoreError::DigestMismatch {
                    expected: blob.clone(),
                    actual,
                });
            }
            sound().insert(blob.clone());
        }
        let mut tar = vec![0; length];
        match libdeflater::Decompressor::new().gzip_decompress(&data, &mut tar) {
            Ok(inflated) if inflated == length && libdeflater::crc32(&tar) == crc => Ok(Some(tar)),
            _ => Ok(None),
        }
    }

    /// Moves a finished overlay-form directory (a RUN's upper directory, a
    /// COPY's staging directory) into the store as the extracted copy of
    /// `diff_id`, with one `rename` (so `dir` must be on the store's
    /// filesystem: make it under the store's `tmp/`). When the store
    /// already has that layer, `dir` is removed and the existing copy
    /// returned. The content is trusted to be what `diff_id` names.
    pub fn adopt_layer(&self, diff_id: &Digest, dir: &Path) -> Result<PathBuf> {
        let dst = self.layer_path(diff_id);
        let _lock = self.lock_layer(diff_id)?;
        Self::rename_layer(dir, &dst)
    }

    /// [`Store::adopt_layer`] for a directory that is still in use (an
    /// overlay lower of a mounted root, its layer written while the next
    /// step ran): when the store already has the layer, `dir` is left as it
    /// is (its owner removes it once unmounted) and the store's copy is
    /// returned; else `dir` is renamed into place. No lock file: the
    /// `RENAME_NOREPLACE` rename alone decides between concurrent adopters
    /// and extractions, which all rename whole directories.
    pub fn adopt_layer_in_use(&self, diff_id: &Digest, dir: &Path) -> Result<PathBuf> {
        let dst = self.layer_path(diff_id);
        create_dir(&self.layer_dir(diff_id.algorithm()))?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            dir,
            rustix::fs::CWD,
            &dst,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(dst),
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                super::prune::mark_used(&dst);
                Ok(dst)
            }
            Err(e) => Err(StoreError::Adopt {
                from: dir.to_path_buf(),
                to: dst,
                source: e.into(),
            }),
        }
    }

    /// Renames `dir` to `dst` unless `dst` exists, in which case `dir` is
    /// removed.
    fn rename_layer(dir: &Path, dst: &Path) -> Result<PathBuf> {
        let renamed = Self::rename_layer_once(dir, dst);
        super::prune::mark_used(dst);
        renamed
    }

    fn rename_layer_once(dir: &Path, dst: &Path) -> Result<PathBuf> {
        let adopt_err = |source| StoreError::Adopt {
            from: dir.to_path_buf(),
            to: dst.to_path_buf(),
            source,
        };
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            dir,
            rustix::fs::CWD,
            dst,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(dst.to_path_buf()),
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                tracing::debug!(layer = %dst.display(), "layer already in the store; dropping this copy");
                remove_tree(dir).map_err(write_err(dir))?;
                Ok(dst.to_path_buf())
            }
            Err(e) => Err(adopt_err(e.into())),
        }
    }

    /// Removes the `tmp/` directories named `prefix*`: extractions of one
    /// layer that were interrupted (the caller holds that layer's lock, so
    /// none of them is still running).
    fn remove_leftovers(&self, prefix: &str) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let path = entry.path();
                if let Err(err) = remove_tree(&path) {
                    tracing::debug!(path = %path.display(), %err, "cannot remove an interrupted extraction");
                }
            }
        }
    }
}

/// `Ok` when the layer `blob` held the tar `diff_id` names (`actual`).
fn check_diff_id(blob: &Digest, diff_id: &Digest, actual: Digest) -> Result<()> {
    if actual == *diff_id {
        Ok(())
    } else {
        Err(StoreError::DiffIdMismatch {
            blob: blob.clone(),
            expected: diff_id.clone(),
            actual,
        })
    }
}
