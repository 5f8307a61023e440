//! Sparse files in layer tars, written with their holes.
//!
//! GNU tar stores a sparse file (`tar --sparse`) as its data regions plus a map of where they go. The old
//! GNU header format (entry type `S`) is decoded by the `tar` crate itself, which hands out the file with
//! its holes filled with zeros; [`write_skipping_zeros`] turns whole blocks of zeros back into holes.
//! The PAX formats (`--format=posix`, GNU tar's default for `--sparse`) are regular-file entries whose
//! PAX records carry the map, and the `tar` crate knows nothing of them: read as plain files they come
//! out as `GNUSparseFile.NNN/NAME` holding the map and the packed data. [`PaxSparse`] reads the three
//! versions GNU tar writes, as Go's `archive/tar` (umoci, podman, containerd) does:
//!
//! - 0.0: `GNU.sparse.size` (real size), `GNU.sparse.numblocks`, then one `GNU.sparse.offset` and
//!   `GNU.sparse.numbytes` record per region; the entry keeps its own name;
//! - 0.1: `GNU.sparse.map=off,len,off,len,…`, the real name in `GNU.sparse.name`;
//! - 1.0: `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.realsize`, `GNU.sparse.name`; the map
//!   is at the start of the data, in decimal lines (count, then offset and length per region), padded to
//!   a 512-byte block.
//!
//! The data regions are written at their offsets into a new file and the holes between them are never
//! written, so they stay holes (`SEEK_HOLE` finds them, `st_blocks` counts only the data).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Why a sparse entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    /// The map or its records are malformed, or do not fit the entry.
    #[error("{0}")]
    Invalid(String),
    /// The tar stream could not be read (or ended inside the entry).
    #[error("reading layer tar: {0}")]
    Read(#[source] io::Error),
    /// Writing the file failed.
    #[error("write: {0}")]
    Write(#[source] io::Error),
}

fn invalid(reason: impl Into<String>) -> SparseError {
    SparseError::Invalid(reason.into())
}

/// Most data regions one sparse file may have (a hostile map must not make rimg allocate without bound).
pub const MAX_REGIONS: usize = 1 << 20;

/// A GNU PAX sparse file: its real name and size and where its data goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PaxSparse {
    /// The real name (`GNU.sparse.name`), which replaces the entry's `GNUSparseFile.NNN/…` name.
    pub name: Option<Vec<u8>>,
    /// The size of the file with its holes.
    pub real_size: u64,
    /// (offset, length) of each data region, in file order; read from the data for format 1.0.
    pub map: Vec<(u64, u64)>,
    /// Format 1.0: the map comes first in the entry's data.
    pub map_in_data: bool,
}

fn number(key: &[u8], v: &[u8]) -> Result<u64, SparseError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| invalid(format!("{} is not a number", String::from_utf8_lossy(key))))
}

impl PaxSparse {
    /// The sparse file the `GNU.sparse.*` records of one entry describe (other records are ignored), or
    /// `None` when there are none.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Option<PaxSparse>, SparseError> {
        let mut sp = PaxSparse::default();
        let (mut seen, mut size, mut version, mut blocks, mut offset) =
            (false, None, (None, None), None, None);
        for (key, v) in records {
            let Some(k) = key.strip_prefix(b"GNU.sparse.") else { continue };
            seen = true;
            match k {
                b"major" => version.0 = Some(number(key, v)?),
                b"minor" => version.1 = Some(number(key, v)?),
                b"name" => sp.name = Some(v.to_vec()),
                b"size" | b"realsize" => size = Some(number(key, v)?),
                b"numblocks" => blocks = Some(number(key, v)?),
                b"offset" => offset = Some(number(key, v)?),
                b"numbytes" => {
                    let off =
                        offset.take().ok_or_else(|| invalid("GNU.sparse.numbytes without an offset"))?;
                    sp.push(off, number(key, v)?)?;
                }
                b"map" => sp.parse_map_record(v)?,
                _ => {}
            }
        }
        if !seen {
            return Ok(None);
        }
        match version {
            (None, None) => {
                if blocks.is_some_and(|n| n != sp.map.len() as u64) {
                    return Err(invalid("GNU.sparse.numblocks does not match the map"));
                }
            }
            (Some(1), Some(0)) => sp.map_in_data = true,
            (major, minor) => {
                let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
                return Err(invalid(format!(
                    "unsupported GNU sparse format {}.{}",
                    show(major),
                    show(minor)
                )));
            }
        }
        sp.real_size = size.ok_or_else(|| invalid("sparse file without its real size"))?;
        Ok(Some(sp))
    }

    fn push(&mut self, offset: u64, len: u64) -> Result<(), SparseError> {
        if self.map.len() >= MAX_REGIONS {
            return Err(invalid(format!("sparse map of more than {MAX_REGIONS} regions")));
        }
        self.map.push((offset, len));
        Ok(())
    }

    /// Format 0.1's `GNU.sparse.map=off,len,off,len,…`.
    fn parse_map_record(&mut self, v: &[u8]) -> Result<(), SparseError> {
        let key = b"GNU.sparse.map";
        let mut nums = v.split(|&b| b == b',').filter(|s| !s.is_empty());
        while let Some(off) = nums.next() {
            let len = nums.next().ok_or_else(|| invalid("GNU.sparse.map has an odd number of values"))?;
            self.push(number(key, off)?, number(key, len)?)?;
        }
        Ok(())
    }

    /// Format 1.0's map at the start of `data`, read in whole 512-byte blocks (at most `max_bytes`); returns
    /// how many bytes it took.
    fn read_map(&mut self, data: &mut impl Read, max_bytes: u64) -> Result<u64, SparseError> {
        let mut block = [0u8; 512];
        let (mut consumed, mut cur, mut digits, mut count, mut pending) = (0u64, 0u64, 0, None, None);
        loop {
            data.read_exact(&mut block).map_err(SparseError::Read)?;
            consumed += 512;
            if consumed > max_bytes {
                return Err(invalid(format!("sparse map longer than {max_bytes} bytes")));
            }
            for &b in &block {
                match b {
                    b'0'..=b'9' if digits < 20 => {
                        cur = cur
                            .checked_mul(10)
                            .and_then(|c| c.checked_add(u64::from(b - b'0')))
                            .ok_or_else(|| invalid("number in the sparse map out of range"))?;
                        digits += 1;
                    }
                    b'\n' if digits > 0 => {
                        match (count, pending.take()) {
                            (None, _) if cur > MAX_REGIONS as u64 => {
                                return Err(invalid(format!("sparse map of more than {MAX_REGIONS} regions")))
                            }
                            (None, _) => count = Some(cur),
                            (Some(_), None) => pending = Some(cur),
                            (Some(_), Some(off)) => self.push(off, cur)?,
                        }
                        (cur, digits) = (0, 0);
                        if count == Some(self.map.len() as u64) && pending.is_none() {
                            return Ok(consumed);
                        }
                    }
                    _ => return Err(invalid("malformed sparse map")),
                }
            }
        }
    }

    /// Check that the regions are in order, inside the real size, and hold exactly `data_len` bytes.
    fn check(&self, data_len: u64) -> Result<(), SparseError> {
        let mut end = 0u64;
        let mut total = 0u64;
        for &(off, len) in &self.map {
            let stop = off.checked_add(len).filter(|&s| s <= self.real_size);
            let stop = stop.ok_or_else(|| invalid("sparse region beyond the file's size"))?;
            if off < end {
                return Err(invalid("sparse regions overlap or are out of order"));
            }
            end = stop;
            total += len;
        }
        if total != data_len {
            return Err(invalid(format!(
                "sparse map lists {total} bytes of data, the entry holds {data_len}"
            )));
        }
        Ok(())
    }

    /// Write the file from the entry's `data` (`stored` bytes) into the new, empty `file`: each region at
    /// its offset, nothing in the holes, then the real size. A 1.0 map may take at most `max_map_bytes`.
    /// Returns the bytes of data written.
    pub fn write_to(
        &mut self,
        data: &mut impl Read,
        stored: u64,
        file: &File,
        buf: &mut [u8],
        max_map_bytes: u64,
    ) -> Result<u64, SparseError> {
        let map_bytes = if self.map_in_data { self.read_map(data, max_map_bytes.min(stored))? } else { 0 };
        self.check(stored - map_bytes)?;
        for &(off, len) in &self.map {
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(buf.len() as u64) as usize;
                let n = match data.read(&mut buf[..want]) {
                    Ok(0) => {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "layer tar truncated in a sparse file",
                        );
                        return Err(SparseError::Read(e));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(SparseError::Read(e)),
                };
                file.write_all_at(&buf[..n], off + done).map_err(SparseError::Write)?;
                done += n as u64;
            }
        }
        file.set_len(self.real_size).map_err(SparseError::Write)?;
        Ok(stored - map_bytes)
    }
}

/// The size of the blocks [`write_skipping_zeros`] leaves out when they are all zeros (the usual file
/// system block).
const HOLE_BLOCK: usize = 4096;

/// Copy `data` into the new, empty `file`, leaving every aligned 4 KiB block of zeros unwritten (a hole),
/// then set the file's size: an old GNU sparse entry, whose holes the `tar` crate reads as zeros. Returns
/// the file's size. `buf` must be a multiple of 4 KiB long.
pub fn write_skipping_zeros(data: &mut impl Read, file: &File, buf: &mut [u8]) -> Result<u64, SparseError> {
    let mut pos = 0u64;
    loop {
        // Fill the buffer whole, so blocks stay aligned to the file's offsets.
        let mut n = 0;
        while n < buf.len() {
            match data.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SparseError::Read(e)),
            }
        }
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(HOLE_BLOCK) {
            if block.iter().any(|&b| b != 0) {
                file.write_all_at(block, pos).map_err(SparseError::Write)?;
            }
            pos += block.len() as u64;
        }
    }
    file.set_len(pos).map_err(SparseError::Write)?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(records: &[(&str, &str)]) -> Result<Option<PaxSparse>, SparseError> {
        PaxSparse::from_records(records.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn the_three_pax_formats() {
        let v00 = parse(&[
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "0"),
            ("GNU.sparse.numbytes", "10"),
            ("GNU.sparse.offset", "100"),
            ("GNU.sparse.numbytes", "0"),
            ("mtime", "1"),
        ]);
        let want = PaxSparse { name: None, real_size: 100, map: vec![(0, 10), (100, 0)], map_in_data: false };
        assert_eq!(v00.unwrap(), Some(want.clone()));
        let v01 = parse(&[
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.name", "big"),
            ("GNU.sparse.map", "0,10,100,0"),
        ]);
        assert_eq!(v01.unwrap(), Some(PaxSparse { name: Some(b"big".to_vec()), ..want }));
        let v10 = parse(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "big"),
            ("GNU.sparse.realsize", "100"),
        ]);
        let mut v10 = v10.unwrap().unwrap();
        assert!(v10.map_in_data);
        let mut data = b"2\n0\n10\n100\n0\n".to_vec();
        data.resize(512, 0);
        data.extend(b"0123456789");
        assert_eq!(v10.read_map(&mut &data[..], 1 << 20).unwrap(), 512);
        assert_eq!(v10.map, [(0, 10), (100, 0)]);
        assert_eq!(parse(&[("path", "x"), ("mtime", "1")]).unwrap(), None);
    }

    #[test]
    fn bad_maps_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "1")],
            &[("GNU.sparse.map", "0,10")], // no real size
            &[("GNU.sparse.size", "9"), ("GNU.sparse.map", "0,10,20")], // odd
            &[("GNU.sparse.size", "9"), ("GNU.sparse.numbytes", "1")], // no offset
            &[("GNU.sparse.size", "x"), ("GNU.sparse.map", "0,1")], // not a number
            &[("GNU.sparse.size", "9"), ("GNU.sparse.numblocks", "3"), ("GNU.sparse.map", "0,1")],
        ];
        for c in cases {
            assert!(parse(c).is_err(), "{c:?}");
        }
        let sp = |map: Vec<(u64, u64)>| PaxSparse { real_size: 100, map, ..Default::default() };
        assert!(sp(vec![(0, 10), (5, 10)]).check(20).is_err(), "overlap");
        assert!(sp(vec![(95, 10)]).check(10).is_err(), "beyond the size");
        assert!(sp(vec![(0, 10)]).check(11).is_err(), "data left over");
        assert!(sp(vec![(0, 10), (90, 10)]).check(20).is_ok());
        for map in [&b"x\n"[..], b"1\n0\n", b"99999999999999999999999\n"] {
            let mut v = PaxSparse { map_in_data: true, ..Default::default() };
            let mut data = map.to_vec();
            data.resize(512, 0);
            assert!(v.read_map(&mut &data[..], 1 << 20).is_err(), "{map:?}");
        }
        let mut v = PaxSparse { map_in_data: true, ..Default::default() };
        let long = format!("1000\n{}", "0\n".repeat(2000));
        let e = v.read_map(&mut long.as_bytes(), 1024).unwrap_err().to_string();
        assert!(e.contains("longer than 1024 bytes"), "{e}");
    }
}
