//! Reading a layer's tar stream safely: a guard that bounds the extension
//! headers the `tar` crate reads before each entry, and a PAX record reader
//! that takes records by length (POSIX) rather than by line.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use rustix::fs::Timespec;

use super::shown;

/// The most bytes of extension headers (PAX records, GNU long names, sparse
/// maps) read before one entry; Go's `archive/tar` allows the same.
pub(super) const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Tar block size.
const BLOCK: u64 = 512;

/// Watches the bytes the tar reader pulls between two entries (extension
/// headers and the next header) and stops it past [`MAX_HEADER_BYTES`]; the
/// `tar` crate reads a PAX or GNU long-name entry whole into memory, whatever
/// size its header claims. It also keeps those bytes, so this module reads
/// PAX records itself (the `tar` crate splits them at newlines, which breaks
/// binary xattr values such as `security.capability`).
#[derive(Default)]
pub(super) struct Guard {
    pos: Cell<u64>,
    armed: Cell<bool>,
    pub(super) tripped: Cell<bool>,
    start: Cell<u64>,
    window: RefCell<Vec<u8>>,
}

impl Guard {
    pub(super) fn arm(&self) {
        self.armed.set(true);
        self.start.set(self.pos.get());
        self.window.borrow_mut().clear();
    }

    pub(super) fn disarm(&self) {
        self.armed.set(false);
    }

    /// The data of the PAX extended header (type `x`) before the entry whose
    /// header starts at `header_pos`, found by walking the blocks read since
    /// [`Guard::arm`]. Errs when that walk does not land on the entry, i.e.
    /// when this reading and the `tar` crate's disagree.
    pub(super) fn pax_before(&self, header_pos: u64) -> Result<Option<Vec<u8>>, ()> {
        let window = self.window.borrow();
        let start = self.start.get();
        let mut pos = start.checked_next_multiple_of(BLOCK).ok_or(())?;
        let mut pax = None;
        while pos < header_pos {
            let off = usize::try_from(pos - start).map_err(|_| ())?;
            let header = window.get(off..off + 512).ok_or(())?;
            let size = tar_number(&header[124..136]).ok_or(())?;
            let data = off + 512;
            if header[156] == b'x' {
                let end = usize::try_from(size)
                    .ok()
                    .and_then(|s| data.checked_add(s))
                    .ok_or(())?;
                pax = Some(window.get(data..end).ok_or(())?.to_vec());
            }
            let padded = size.checked_next_multiple_of(BLOCK).ok_or(())?;
            pos = pos
                .checked_add(BLOCK)
                .and_then(|p| p.checked_add(padded))
                .ok_or(())?;
        }
        if pos == header_pos { Ok(pax) } else { Err(()) }
    }
}

/// A numeric tar header field: octal text, or base-256 when the high bit of
/// the first byte is set (read as the `tar` crate reads it).
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first()? & 0x80 != 0 {
        let skip = field.len().checked_sub(8)?;
        let mut value = if skip == 0 {
            u64::from(field[0] ^ 0x80)
        } else {
            0
        };
        for b in &field[skip.max(1)..] {
            value = (value << 8) | u64::from(*b);
        }
        Some(value)
    } else {
        let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
        let text = std::str::from_utf8(&field[..end]).ok()?;
        u64::from_str_radix(text.trim(), 8).ok()
    }
}

/// The layer stream as the tar reader sees it, through a [`Guard`].
pub(super) struct Guarded<R> {
    pub(super) inner: R,
    pub(super) guard: Rc<Guard>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let guard = &self.guard;
        if guard.armed.get() {
            let mut window = guard.window.borrow_mut();
            if (window.len() + n) as u64 > MAX_HEADER_BYTES + 4 * BLOCK {
                guard.tripped.set(true);
                return Err(io::Error::other("extension headers too large"));
            }
            window.extend_from_slice(&buf[..n]);
        }
        guard.pos.set(guard.pos.get() + n as u64);
        Ok(n)
    }
}

/// The PAX records this module uses, read by record length (POSIX), so
/// values may hold any byte.
#[derive(Default)]
pub(super) struct Pax {
    pub(super) path: Option<Vec<u8>>,
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) size: Option<u64>,
    pub(super) uid: Option<u64>,
    pub(super) gid: Option<u64>,
    pub(super) mtime: Option<Timespec>,
    pub(super) atime: Option<Timespec>,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pax {
    pub(super) fn parse(mut data: &[u8]) -> Result<Self, String> {
        let mut pax = Self::default();
        while !data.is_empty() && data[0] != 0 {
            let malformed = || "it has a malformed PAX record".to_owned();
            let space = data
                .iter()
                .take(20)
                .position(|b| *b == b' ')
                .ok_or_else(malformed)?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(malformed)?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(malformed());
            }
            let record = &data[space + 1..len - 1];
            data = &data[len..];
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or_else(malformed)?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let number = |v: &[u8]| -> Result<u64, String> {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("its PAX record {} is not a number", shown(key)))
            };
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => pax.size = Some(number(value)?),
                b"uid" => pax.uid = Some(number(value)?),
                b"gid" => pax.gid = Some(number(value)?),
                b"mtime" => pax.mtime = Some(pax_time(value).ok_or_else(malformed)?),
                b"atime" => pax.atime = Some(pax_time(value).ok_or_else(malformed)?),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        pax.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
        Ok(pax)
    }
}

/// A PAX time: decimal seconds, maybe negative, maybe with a fraction.
fn pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10_i64.pow(8 - u32::try_from(i).ok()?);
    }
    Some(if negative && nanos > 0 {
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    } else {
        Timespec {
            tv_sec: if negative { -secs } else { secs },
            tv_nsec: nanos,
        }
    })
}
