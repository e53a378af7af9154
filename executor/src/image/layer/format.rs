//! The tar format of a layer: entries validated and sorted into a plan
//! (normalized paths, hard link targets that sort before their links),
//! then written as normalized USTAR headers, with a PAX extended header
//! only where USTAR cannot hold a value. What goes around the tar stream
//! (compression, digests) is the parent module's.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::{
    EntryKind, LayerEntry, LayerError, OPAQUE_WHITEOUT, Result, WHITEOUT_PREFIX, WriteOptions,
};

pub(super) const BLOCK: usize = 512;
const COPY_BUFFER: usize = 1 << 20;
/// Largest values the USTAR octal fields hold.
const MAX_OCTAL_8: u64 = 0o777_7777;
const MAX_OCTAL_12: u64 = 0o777_7777_7777;

/// An entry ready to be written: validated, with its name in the tar.
pub(super) struct Planned {
    /// Name in the tar, without the trailing `/` of directories.
    name: PathBuf,
    entry: LayerEntry,
}

/// Normalizes a path in the image: no root, no `.`, no `..`.
fn normalize(path: &Path) -> Result<PathBuf> {
    let invalid = |reason| LayerError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("`..` is not allowed")),
            Component::Prefix(_) => return Err(invalid("not a Unix path")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid("empty path"));
    }
    Ok(out)
}

fn with_file_name_prefix(path: &Path, prefix: &str) -> PathBuf {
    let mut name = OsStr::new(prefix).to_owned();
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// Validates, names, clamps and sorts the entries.
pub(super) fn plan(entries: Vec<LayerEntry>, options: &WriteOptions) -> Result<Vec<Planned>> {
    let mut planned = Vec::with_capacity(entries.len());
    for mut entry in entries {
        let path = normalize(&entry.path)?;
        let reserved = path
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()));
        if reserved {
            return Err(LayerError::InvalidPath {
                path,
                reason: "names starting with .wh. are reserved for whiteouts",
            });
        }
        for name in entry.xattrs.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(LayerError::XattrName {
                    path,
                    name: name.clone(),
                });
            }
        }
        let name = match entry.kind {
            EntryKind::Whiteout => with_file_name_prefix(&path, WHITEOUT_PREFIX),
            EntryKind::OpaqueWhiteout => path.join(OPAQUE_WHITEOUT),
            _ => path.clone(),
        };
        if let EntryKind::Hardlink(target) = &entry.kind {
            entry.kind = EntryKind::Hardlink(normalize(target)?);
        }
        if let Some(epoch) = options.source_date_epoch {
            entry.mtime = entry.mtime.min(i64::try_from(epoch).unwrap_or(i64::MAX));
        }
        entry.mode &= 0o7777;
        entry.path = path;
        planned.push(Planned { name, entry });
    }
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = planned.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(LayerError::DuplicatePath {
            path: pair[1].entry.path.clone(),
        });
    }
    let mut linkable = HashSet::new();
    for p in &planned {
        match &p.entry.kind {
            EntryKind::Dir | EntryKind::Whiteout | EntryKind::OpaqueWhiteout => {}
            EntryKind::Hardlink(target) => {
                if !linkable.contains(target) {
                    return Err(LayerError::HardlinkTarget {
                        path: p.entry.path.clone(),
                        target: target.clone(),
                    });
                }
                linkable.insert(p.name.clone());
            }
            _ => {
                linkable.insert(p.name.clone());
            }
        }
    }
    Ok(planned)
}

pub(super) fn write_tar(plan: &[Planned], out: &mut impl Write) -> Result<()> {
    let mut buf = vec![0u8; COPY_BUFFER];
    for p in plan {
        write_entry(p, out, &mut buf)?;
    }
    out.write_all(&[0u8; 2 * BLOCK]).map_err(LayerError::Write)
}

fn write_entry(p: &Planned, out: &mut impl Write, buf: &mut [u8]) -> Result<()> {
    let (file, size) = match &p.entry.kind {
        EntryKind::File(source) => {
            let (file, size) = open_source(source)?;
            (Some((file, source)), size)
        }
        _ => (None, 0),
    };
    let (header, pax) = header_for(p, size);
    if !pax.is_empty() {
        let (pax_header, data) = pax_header(&p.name, &pax);
        out.write_all(pax_header.as_bytes())
            .and_then(|()| out.write_all(&data))
            .and_then(|()| out.write_all(&[0u8; BLOCK][..padding(data.len() as u64)]))
            .map_err(LayerError::Write)?;
    }
    out.write_all(header.as_bytes())
        .map_err(LayerError::Write)?;
    if let Some((file, path)) = file {
        copy_exact(file, path, size, out, buf)?;
        out.write_all(&[0u8; BLOCK][..padding(size)])
            .map_err(LayerError::Write)?;
    }
    Ok(())
}

/// Opens a file's content source without blocking on FIFOs, checks that
/// it is a regular file and returns its size.
fn open_source(path: &Path) -> Result<(File, u64)> {
    let read_err = |source: io::Error| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| read_err(e.into()))?;
    let file = File::from(fd);
    let metadata = file.metadata().map_err(read_err)?;
    if !metadata.is_file() {
        return Err(LayerError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok((file, metadata.len()))
}

/// Copies exactly `size` bytes of `file` to `out`; a file that is shorter
/// or longer than that now is an error.
fn copy_exact(
    mut file: File,
    path: &Path,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
) -> Result<()> {
    let changed = || LayerError::Changed {
        path: path.to_owned(),
        expected: size,
    };
    let mut remaining = size;
    while remaining > 0 {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(LayerError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        out.write_all(&buf[..n]).map_err(LayerError::Write)?;
        remaining -= n as u64;
    }
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(changed()),
        Err(source) => Err(LayerError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn padding(size: u64) -> usize {
    // The remainder is below 512, so the cast is lossless.
    #[allow(clippy::cast_possible_truncation)]
    let rem = (size % BLOCK as u64) as usize;
    (BLOCK - rem) % BLOCK
}

/// Builds the USTAR header for an entry and the PAX records it needs.
fn header_for(p: &Planned, size: u64) -> (tar::Header, BTreeMap<String, Vec<u8>>) {
    let e = &p.entry;
    let mut pax = BTreeMap::new();
    let mut h = tar::Header::new_ustar();

    let mut name = p.name.as_os_str().as_bytes().to_vec();
    if e.kind == EntryKind::Dir {
        name.push(b'/');
    }
    if !set_ustar_name(&mut h, &name) {
        pax.insert("path".to_owned(), name.clone());
        set_field(&mut h.as_old_mut().name, &ascii_lossy(&name));
    }

    h.set_mode(e.mode);
    for (key, value, field) in [("uid", e.uid, 0), ("gid", e.gid, 1)] {
        let value = if value > MAX_OCTAL_8 {
            pax.insert(key.to_owned(), value.to_string().into_bytes());
            0
        } else {
            value
        };
        if field == 0 {
            h.set_uid(value);
        } else {
            h.set_gid(value);
        }
    }
    match u64::try_from(e.mtime) {
        Ok(t) if t <= MAX_OCTAL_12 => h.set_mtime(t),
        _ => {
            pax.insert("mtime".to_owned(), e.mtime.to_string().into_bytes());
            h.set_mtime(0);
        }
    }
    if size > MAX_OCTAL_12 {
        pax.insert("size".to_owned(), size.to_string().into_bytes());
        h.set_size(0);
    } else {
        h.set_size(size);
    }

    let (entry_type, link) = match &e.kind {
        EntryKind::File(_) | EntryKind::Whiteout | EntryKind::OpaqueWhiteout => {
            (tar::EntryType::Regular, None)
        }
        EntryKind::Dir => (tar::EntryType::Directory, None),
        EntryKind::Symlink(target) => (tar::EntryType::Symlink, Some(target)),
        EntryKind::Hardlink(target) => (tar::EntryType::Link, Some(target)),
        EntryKind::CharDevice(..) => (tar::EntryType::Char, None),
        EntryKind::BlockDevice(..) => (tar::EntryType::Block, None),
        EntryKind::Fifo => (tar::EntryType::Fifo, None),
    };
    h.set_entry_type(entry_type);
    if let Some(target) = link {
        let target = target.as_os_str().as_bytes();
        if target.len() <= 100 && target.is_ascii() {
            set_field(&mut h.as_old_mut().linkname, target);
        } else {
            pax.insert("linkpath".to_owned(), target.to_vec());
        }
    }
    if let EntryKind::CharDevice(major, minor) | EntryKind::BlockDevice(major, minor) = e.kind {
        let ustar = h.as_ustar_mut().expect("a USTAR header");
        ustar.set_device_major(major);
        ustar.set_device_minor(minor);
    }
    for (name, value) in &e.xattrs {
        pax.insert(format!("SCHILY.xattr.{name}"), value.clone());
    }
    h.set_cksum();
    (h, pax)
}

/// Puts `name` in the USTAR name field, or split between prefix and name
/// as Go's `archive/tar` does; false when it does not fit or is not ASCII.
fn set_ustar_name(h: &mut tar::Header, name: &[u8]) -> bool {
    if !name.is_ascii() {
        return false;
    }
    if name.len() <= 100 {
        set_field(&mut h.as_old_mut().name, name);
        return true;
    }
    // The prefix is at most 155 bytes; the separator goes in neither field.
    let limit = (name.len() - 1).min(156);
    let Some(split) = name[..limit].iter().rposition(|&b| b == b'/') else {
        return false;
    };
    let rest = &name[split + 1..];
    if split == 0 || rest.is_empty() || rest.len() > 100 {
        return false;
    }
    let ustar = h.as_ustar_mut().expect("a USTAR header");
    set_field(&mut ustar.prefix, &name[..split]);
    set_field(&mut ustar.name, rest);
    true
}

fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

fn ascii_lossy(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(u8::is_ascii).collect()
}

/// The PAX extended header (`x`) block and its data for an entry.
fn pax_header(name: &Path, records: &BTreeMap<String, Vec<u8>>) -> (tar::Header, Vec<u8>) {
    let mut data = Vec::new();
    for (key, value) in records {
        // "%d %s=%s\n", where the length counts itself.
        let base = key.len() + value.len() + 3;
        let mut len = base + base.to_string().len();
        if len.to_string().len() + base != len {
            len = base + len.to_string().len();
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(key.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    let mut pax_name = b"PaxHeaders.0/".to_vec();
    pax_name.extend(ascii_lossy(name.file_name().unwrap_or_default().as_bytes()));
    set_field(&mut h.as_old_mut().name, &pax_name);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    (h, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_cover_big_sizes_and_times() {
        let planned = Planned {
            name: "big".into(),
            entry: LayerEntry {
                mtime: -1,
                ..LayerEntry::new("big", EntryKind::File("/dev/zero".into()))
            },
        };
        let (header, pax) = header_for(&planned, 9 << 30);
        assert_eq!(pax["size"], (9u64 << 30).to_string().into_bytes());
        assert_eq!(pax["mtime"], b"-1");
        assert_eq!(header.size().unwrap(), 0);
        let (_, data) = pax_header(Path::new("big"), &pax);
        // Each record's length counts its own digits.
        let text = String::from_utf8(data).unwrap();
        for record in text.split_inclusive('\n') {
            let (len, _) = record.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{record:?}");
        }
    }
}
