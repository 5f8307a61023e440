//! Merged directory listings with name-derived offsets.
//!
//! The server does not open directories (it answers OPENDIR with ENOSYS, so the kernel sends no
//! OPENDIR/RELEASEDIR round trips and caches listings per inode), so there is no per-open handle to keep a
//! snapshot in. Instead every entry's readdir offset (its "cookie") is derived from its name, as ext4's
//! hash order does: a listing is sorted by cookie and a reader resuming at offset `c` gets the entries whose
//! cookie is greater than `c`. That stays correct across any rebuild of the listing: an entry that exists
//! all along is returned exactly once, whatever was added or removed in between and however many readers
//! share the directory. A listing built once is cached on the directory's node and reused by the following
//! READDIR calls of a reader walking through it; a change to the directory through the mount drops it.
//!
//! Cookies stay below 2^31 so that 32-bit programs (whose `off_t` is 32 bits) can read the directory.
//! Names whose hashes collide get consecutive cookies in name order.

use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;

/// Offset of the entry after ".".
const DOT: u64 = 1;
/// Offset of the entry after "..".
const DOTDOT: u64 = 2;
/// Name cookies lie in `[FIRST, LIMIT)` (unless a collision run pushes one past the end).
const FIRST: u64 = 3;
const LIMIT: u64 = 1 << 31;

/// One entry of a merged listing.
#[derive(Clone, Debug)]
pub struct DirEnt {
    /// Name.
    pub name: OsString,
    /// Overlay inode number.
    pub ino: u64,
    /// d_type.
    pub dtype: u8,
    /// Readdir offset of the entry that follows this one (what the kernel passes back to resume).
    pub cookie: u64,
}

/// A merged directory listing in cookie order.
#[derive(Debug, Default)]
pub struct Listing {
    entries: Vec<DirEnt>,
}

/// Where a name's cookie would be without collisions.
fn name_cookie(name: &OsStr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.as_bytes().hash(&mut h);
    FIRST + h.finish() % (LIMIT - FIRST)
}

impl Listing {
    /// Build a listing of directory `ino` (parent `parent`) from its merged entries (name, d_type, inode
    /// number) in any order; "." and ".." are added first.
    pub fn new(ino: u64, parent: u64, entries: Vec<(OsString, u8, u64)>) -> Listing {
        let named = entries
            .into_iter()
            .map(|(name, dtype, ino)| (name_cookie(&name), DirEnt { name, ino, dtype, cookie: 0 }))
            .collect();
        Self::with_cookies(ino, parent, named)
    }

    /// Build from entries paired with the cookies their names want.
    fn with_cookies(ino: u64, parent: u64, mut named: Vec<(u64, DirEnt)>) -> Listing {
        named.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let mut out = Vec::with_capacity(named.len() + 2);
        out.push(DirEnt { name: ".".into(), ino, dtype: libc::DT_DIR, cookie: DOT });
        out.push(DirEnt { name: "..".into(), ino: parent, dtype: libc::DT_DIR, cookie: DOTDOT });
        let mut prev = DOTDOT;
        for (c, mut e) in named {
            e.cookie = c.max(prev + 1);
            prev = e.cookie;
            out.push(e);
        }
        Listing { entries: out }
    }

    /// The entries a reader resuming at readdir offset `offset` has not seen yet.
    pub fn after(&self, offset: u64) -> &[DirEnt] {
        let start = self.entries.partition_point(|e| e.cookie <= offset);
        &self.entries[start..]
    }

    /// All entries, "." and ".." first.
    #[cfg(test)]
    pub fn entries(&self) -> &[DirEnt] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &[DirEnt]) -> Vec<String> {
        l.iter().map(|e| e.name.to_string_lossy().into_owned()).collect()
    }

    fn listing(names: &[&str]) -> Listing {
        Listing::new(
            5,
            1,
            names.iter().enumerate().map(|(i, n)| (OsString::from(n), libc::DT_REG, i as u64 + 10)).collect(),
        )
    }

    #[test]
    fn dots_first_then_strictly_increasing_cookies() {
        let l = listing(&["a", "b", "c", "d"]);
        assert_eq!(names(&l.entries()[..2]), vec![".", ".."]);
        assert_eq!(l.entries()[1].ino, 1);
        assert!(l.entries().windows(2).all(|w| w[0].cookie < w[1].cookie));
        assert!(l.entries().iter().all(|e| e.cookie > 0 && e.cookie < LIMIT));
        assert_eq!(l.after(0).len(), 6);
        assert_eq!(l.after(l.entries()[5].cookie).len(), 0);
    }

    #[test]
    fn resuming_across_changes_returns_unchanged_entries_exactly_once() {
        let all: Vec<String> = (0..500).map(|i| format!("f{i}")).collect();
        let before: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        let l1 = listing(&before);
        // read 200 entries, then the directory changes: 100 removed, 100 added
        let seen: Vec<String> = names(&l1.entries()[..200]);
        let resume = l1.entries()[199].cookie;
        let mut after_change: Vec<String> = all[100..].to_vec();
        after_change.extend((0..100).map(|i| format!("new{i}")));
        let refs: Vec<&str> = after_change.iter().map(|s| s.as_str()).collect();
        let l2 = listing(&refs);
        let rest = names(l2.after(resume));
        let mut got: Vec<String> = seen.into_iter().chain(rest).collect();
        for kept in &all[100..] {
            assert_eq!(got.iter().filter(|n| *n == kept).count(), 1, "{kept}");
        }
        got.sort();
        got.dedup();
        assert!(got.len() >= 400);
    }

    #[test]
    fn colliding_cookies_are_made_consecutive() {
        let e = |n: &str| DirEnt { name: n.into(), ino: 9, dtype: libc::DT_REG, cookie: 0 };
        let wanted = vec![(100, e("z")), (100, e("a")), (101, e("m")), (50, e("q"))];
        let l = Listing::with_cookies(2, 1, wanted);
        let got: Vec<(String, u64)> =
            l.entries()[2..].iter().map(|e| (e.name.to_string_lossy().into_owned(), e.cookie)).collect();
        let want = [("q", 50), ("a", 100), ("z", 101), ("m", 102)];
        assert_eq!(got, want.iter().map(|(n, c)| (n.to_string(), *c)).collect::<Vec<_>>());
    }
}
