//! Lexical cleaning of tar entry names.
//!
//! A tar entry name is untrusted: `/etc/passwd`, `a/../../x`, `./b//c`. Names are cleaned once, here,
//! into a canonical relative form (`a/b/c`, components separated by one `/`, no `.` or `..`, no leading
//! `/`) before anything touches the file system. A leading `/` is stripped, as docker does (a layer's
//! `/etc/x` means `etc/x`); a `..` that would climb above the layer root is refused.

/// Why an entry name cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// A `..` climbs above the layer root.
    Escapes,
    /// The name contains a NUL byte.
    Nul,
}

/// Clean `raw` into `out` (cleared first). An empty result means the layer root itself.
pub fn clean(raw: &[u8], out: &mut Vec<u8>) -> Result<(), BadPath> {
    out.clear();
    if raw.contains(&0) {
        return Err(BadPath::Nul);
    }
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => match out.iter().rposition(|&b| b == b'/') {
                Some(i) => out.truncate(i),
                None if !out.is_empty() => out.clear(),
                None => return Err(BadPath::Escapes),
            },
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(())
}

/// Split a cleaned path into (parent, last component); the parent of a top-level name is `""`.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<String, BadPath> {
        let mut out = Vec::new();
        clean(s.as_bytes(), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn cleaning() {
        assert_eq!(c("a/b/c").unwrap(), "a/b/c");
        assert_eq!(c("./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(c("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(c("a/b/../c").unwrap(), "a/c");
        assert_eq!(c("a/..").unwrap(), "");
        assert_eq!(c("./").unwrap(), "");
        assert_eq!(c("a/../..").unwrap_err(), BadPath::Escapes);
        assert_eq!(c("../etc/passwd").unwrap_err(), BadPath::Escapes);
        assert_eq!(c("/../etc").unwrap_err(), BadPath::Escapes);
        assert_eq!(c("a/../../../etc").unwrap_err(), BadPath::Escapes);
        assert_eq!(c("a\0b").unwrap_err(), BadPath::Nul);
        assert_eq!(c("..foo/.wh...").unwrap(), "..foo/.wh...");
    }

    #[test]
    fn splitting() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }

    proptest::proptest! {
        /// Whatever the input, a cleaned name is relative, has no `.`/`..`/empty components, and is what
        /// a lexical resolution inside a root gives (or the input escapes it).
        #[test]
        fn cleaned_names_stay_inside(parts in proptest::collection::vec("(\\.\\.|\\.|a|b|/|)", 0..12)) {
            let raw = parts.join("/");
            let mut out = Vec::new();
            let mut depth: i64 = 0;
            let mut escaped = false;
            let mut stack: Vec<&str> = Vec::new();
            for c in raw.split('/') {
                match c {
                    "" | "." => {}
                    ".." => { depth -= 1; if depth < 0 { escaped = true; break; } stack.pop(); }
                    c => { depth += 1; stack.push(c); }
                }
            }
            match clean(raw.as_bytes(), &mut out) {
                Err(BadPath::Escapes) => proptest::prop_assert!(escaped),
                Err(BadPath::Nul) => proptest::prop_assert!(false),
                Ok(()) => {
                    proptest::prop_assert!(!escaped);
                    let s = String::from_utf8(out).unwrap();
                    proptest::prop_assert_eq!(&s, &stack.join("/"));
                    proptest::prop_assert!(!s.starts_with('/'));
                    proptest::prop_assert!(s.is_empty() || s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
                }
            }
        }
    }
}
