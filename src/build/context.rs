//! The build context: which files COPY/ADD may see (`.dockerignore`), their content hash for the build
//! cache, and the tar entries a COPY turns them into.
//!
//! Sources are read through [`crate::layer::walk`]: resolved inside the context (or a stage's rootfs) as
//! if it were `/`, as docker/BuildKit and buildah do, so no symlink in it can name a host file; a symlink
//! inside a copied tree is copied as a symlink.
//!
//! `.dockerignore` matching is written here because its rules are docker's own (Go `filepath.Match` per
//! path component, `**` for any number of components, `!` exceptions, last match wins, a directory's
//! exclusion covering its contents): neither gitignore crates nor shell globs implement exactly that.

use crate::layer::walk::{self, Dir, Entry, Kind};
use sha2::{Digest as _, Sha256};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// One `.dockerignore` rule.
#[derive(Debug, Clone)]
struct Rule {
    parts: Vec<String>,
    negate: bool,
}

/// The parsed `.dockerignore` of a context.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Read `.dockerignore` of the context `root` (absent = nothing ignored), resolved inside it.
    pub fn load(root: &Dir) -> io::Result<Ignore> {
        let Some(found) = root.resolve(Path::new(".dockerignore"))? else { return Ok(Ignore::default()) };
        let mut text = String::new();
        found.entry.open_file()?.read_to_string(&mut text)?;
        Ok(Ignore::parse(&text))
    }

    /// Parse rules from text.
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (negate, pat) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let parts: Vec<String> =
                pat.split('/').filter(|p| !p.is_empty() && *p != ".").map(str::to_string).collect();
            if !parts.is_empty() {
                rules.push(Rule { parts, negate });
            }
        }
        Ignore { rules }
    }

    /// Is `rel` (a path relative to the context) excluded? A path is excluded when it, or a directory
    /// above it, matches a rule, unless a later `!` rule matches it again.
    pub fn excluded(&self, rel: &Path) -> bool {
        let comps: Vec<String> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let mut excluded = false;
        for rule in &self.rules {
            let hit = (1..=comps.len()).any(|n| match_parts(&rule.parts, &comps[..n]));
            if hit {
                excluded = !rule.negate;
            }
        }
        excluded
    }
}

fn match_parts(pat: &[String], path: &[String]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(p) if p == "**" => (0..=path.len()).any(|k| match_parts(&pat[1..], &path[k..])),
        Some(p) => {
            !path.is_empty() && glob(p.as_bytes(), path[0].as_bytes()) && match_parts(&pat[1..], &path[1..])
        }
    }
}

/// Go's `filepath.Match` for one component: `*`, `?`, `[a-z]`, `[^x]`, `\` escapes.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|k| glob(&p[1..], &s[k..])),
        Some(b'?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else { return false };
            let Some(&c) = s.first() else { return false };
            let (neg, set) = match p.get(1) {
                Some(b'^') | Some(b'!') => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != neg && glob(&p[end + 1..], &s[1..])
        }
        Some(b'\\') if p.len() > 1 => !s.is_empty() && s[0] == p[1] && glob(&p[2..], &s[1..]),
        Some(&c) => !s.is_empty() && s[0] == c && glob(&p[1..], &s[1..]),
    }
}

/// A COPY source, resolved inside its root (the context or a stage's rootfs).
#[derive(Debug)]
pub struct Source {
    /// The source as written (a wildcard expanded), relative to the root: its last component names it in
    /// a destination directory, as docker names it.
    pub rel: PathBuf,
    /// Where it resolved to, relative to the root (symlinks followed inside the root): what
    /// `.dockerignore` is checked against, since an excluded file is not in the context at all.
    pub resolved: PathBuf,
    /// The file or directory itself, pinned (see [`crate::layer::walk`]).
    pub entry: Entry,
}

/// Resolve a COPY source (may be a glob in its last component) inside `root`, as docker/BuildKit do:
/// symlinks, the last one too, are followed as if `root` were `/`, so a link pointing outside names
/// whatever is at that path inside the root (usually nothing: "not found"), never a host file.
pub fn resolve_sources(root: &Dir, src: &str, ignore: &Ignore) -> Result<Vec<Source>, String> {
    let mut rel = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(s) => rel.push(s),
            Component::ParentDir if !rel.pop() => {
                return Err(format!("COPY source {src:?} is outside the build context"));
            }
            _ => {}
        }
    }
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = Vec::new();
    if name.contains(['*', '?', '[']) {
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = resolve_one(root, &parent, src, ignore)?.entry.open_dir().map_err(|e| e.to_string())?;
        let names = dir.names().map_err(|e| e.to_string())?;
        for n in names.iter().filter(|n| glob(name.as_bytes(), n.as_bytes())) {
            let r = parent.join(n);
            if !ignore.excluded(&r) {
                out.push(resolve_one(root, &r, &r.to_string_lossy(), ignore)?);
            }
        }
    } else if rel.as_os_str().is_empty() || !ignore.excluded(&rel) {
        out.push(resolve_one(root, &rel, src, ignore)?);
    }
    if out.is_empty() {
        return Err(format!("COPY failed: no source files were specified or matched: {src}"));
    }
    Ok(out)
}

/// Resolve one source path inside `root`; a target `.dockerignore` excludes is not there either.
fn resolve_one(root: &Dir, rel: &Path, src: &str, ignore: &Ignore) -> Result<Source, String> {
    let not_found = || format!("COPY failed: file not found in build context: {src}");
    let found = root.resolve(rel).map_err(|e| format!("COPY source {src:?}: {e}"))?.ok_or_else(not_found)?;
    if !found.rel.as_os_str().is_empty() && ignore.excluded(&found.rel) {
        return Err(not_found());
    }
    Ok(Source { rel: rel.to_path_buf(), resolved: found.rel, entry: found.entry })
}

/// Ownership and mode overrides of COPY/ADD.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    /// `--chown` uid/gid; `None` = root (docker's default for COPY from the context).
    pub ids: Option<(u32, u32)>,
    /// `--chmod` bits.
    pub mode: Option<u32>,
    /// Keep the source's own owners (COPY --from a stage or image keeps them).
    pub keep_ids: bool,
}

/// Writes COPY's tar entries: `dest` parents are not emitted (the applier creates missing parents with
/// the metadata they have below, as docker does).
pub struct CopyTar<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
    owner: Owner,
    ignore: Option<&'a Ignore>,
    mtime_clamp: Option<u64>,
}

impl<'a> CopyTar<'a> {
    /// Start writing to `out`.
    pub fn new(out: &'a mut dyn Write, owner: Owner, mtime_clamp: Option<u64>) -> CopyTar<'a> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        CopyTar { tar, owner, ignore: None, mtime_clamp }
    }

    /// Skip entries the context's `.dockerignore` excludes.
    pub fn with_ignore(mut self, ignore: &'a Ignore) -> Self {
        self.ignore = Some(ignore);
        self
    }

    /// Copy `src` (file, dir or symlink) to `dest` in the image (`dest` relative, no leading slash). A
    /// directory's contents go into `dest`, as docker copies directories; symlinks inside it are copied
    /// as symlinks, never followed.
    pub fn add(&mut self, src: &Source, dest: &Path) -> io::Result<()> {
        let is_dir = src.entry.meta().is_dir();
        // `COPY dir /`: the contents go into the image root, which keeps its own metadata (a tar entry
        // cannot name the root anyway).
        if !(is_dir && dest.as_os_str().is_empty()) {
            self.entry(&src.entry, dest)?;
        }
        if !is_dir {
            return Ok(());
        }
        let dir = src.entry.open_dir()?;
        walk::walk::<io::Error>(&dir, &mut |rel, e| {
            if self.ignore.is_some_and(|ig| ig.excluded(&src.resolved.join(rel))) {
                return Ok(false);
            }
            self.entry(e, &dest.join(rel))?;
            Ok(true)
        })
    }

    /// Add a file with the given content (heredoc COPY).
    pub fn add_bytes(&mut self, dest: &Path, data: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(self.owner.mode.unwrap_or(0o644));
        let (u, g) = self.owner.ids.unwrap_or((0, 0));
        h.set_uid(u.into());
        h.set_gid(g.into());
        h.set_mtime(self.mtime_clamp.unwrap_or(0));
        self.tar.append_data(&mut h, dest, data)
    }

    fn entry(&mut self, e: &Entry, dest: &Path) -> io::Result<()> {
        let meta = e.meta();
        let mut h = tar::Header::new_gnu();
        let (u, g) = match (self.owner.ids, self.owner.keep_ids) {
            (Some(ids), _) => ids,
            (None, true) => (meta.uid(), meta.gid()),
            (None, false) => (0, 0),
        };
        h.set_uid(u.into());
        h.set_gid(g.into());
        h.set_username("")?;
        h.set_groupname("")?;
        match self.owner.mode {
            Some(m) if !meta.is_symlink() => h.set_mode(m),
            _ => h.set_mode(meta.mode()),
        }
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        h.set_mtime(self.mtime_clamp.map_or(mtime, |c| mtime.min(c)));
        h.set_size(0);
        match meta.kind() {
            Kind::Symlink => {
                let target = e.read_link()?;
                h.set_entry_type(tar::EntryType::Symlink);
                self.tar.append_link(&mut h, dest, OsStr::from_bytes(&target))
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                self.tar.append_data(&mut h, dest, io::empty())
            }
            Kind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(meta.size());
                // No more than the size in the header, even if the file grows meanwhile.
                let f = e.open_file()?.take(meta.size());
                self.tar.append_data(&mut h, dest, f)
            }
            // fifos, sockets and devices in a build context are skipped, as docker does for sockets.
            _ => Ok(()),
        }
    }

    /// Re-emit the entries of a local tar archive (ADD of a tarball) below `dest`.
    pub fn add_archive(&mut self, archive: impl Read + Send, dest: &Path) -> io::Result<()> {
        let (_, decoded) = crate::layer::decompress_auto(None, archive)?;
        let mut ar = tar::Archive::new(decoded);
        for entry in ar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let rel: PathBuf = path
                .components()
                .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
                .collect();
            let mut h = entry.header().clone();
            if let Some(c) = self.mtime_clamp {
                h.set_mtime(h.mtime().unwrap_or(0).min(c));
            }
            let target = dest.join(&rel);
            match entry.header().entry_type() {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let link = entry.link_name()?.map(|l| l.into_owned()).unwrap_or_default();
                    let link = if entry.header().entry_type() == tar::EntryType::Link {
                        dest.join(
                            link.components()
                                .filter(|c| matches!(c, Component::Normal(_)))
                                .collect::<PathBuf>(),
                        )
                    } else {
                        link
                    };
                    self.tar.append_link(&mut h, &target, &link)?;
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
                _ => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data)?;
                    self.tar.append_data(&mut h, &target, data.as_slice())?;
                }
            }
        }
        Ok(())
    }

    /// Finish the archive.
    pub fn finish(self) -> io::Result<()> {
        let out = self.tar.into_inner()?;
        out.flush()
    }
}

/// Content hash of sources for the build cache: names, types, modes and file contents (not times: a
/// touched but unchanged file must still hit the cache, as BuildKit's content-based cache does).
pub fn hash_sources(sources: &[Source], ignore: &Ignore) -> io::Result<String> {
    let mut h = Sha256::new();
    for s in sources {
        hash_entry(&mut h, &s.rel, &s.entry)?;
        if s.entry.meta().is_dir() {
            let dir = s.entry.open_dir()?;
            walk::walk::<io::Error>(&dir, &mut |rel, e| {
                if ignore.excluded(&s.resolved.join(rel)) {
                    return Ok(false);
                }
                hash_entry(&mut h, &s.rel.join(rel), e)?;
                Ok(true)
            })?;
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// One entry of the hash: its name, type and mode, then its content, each part length-prefixed so no
/// two different trees hash alike.
fn hash_entry(h: &mut Sha256, rel: &Path, e: &Entry) -> io::Result<()> {
    let meta = e.meta();
    let name = rel.as_os_str().as_bytes();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name);
    h.update([meta.kind() as u8]);
    h.update(meta.mode().to_le_bytes());
    match meta.kind() {
        Kind::Symlink => {
            let target = e.read_link()?;
            h.update((target.len() as u64).to_le_bytes());
            h.update(&target);
        }
        Kind::File => {
            h.update(meta.size().to_le_bytes());
            let copied = io::copy(&mut e.open_file()?.take(meta.size()), h)?;
            if copied != meta.size() {
                return Err(io::Error::other(format!("{}: changed while being read", e.path().display())));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse("# c\n*.md\n!README.md\nbuild/\n**/*.o\nsecret?\n");
        assert!(ig.excluded(Path::new("x.md")));
        assert!(!ig.excluded(Path::new("README.md")));
        assert!(ig.excluded(Path::new("build/a/b")));
        assert!(ig.excluded(Path::new("src/deep/x.o")));
        assert!(ig.excluded(Path::new("secret1")));
        assert!(!ig.excluded(Path::new("src/main.c")));
        assert!(!ig.excluded(Path::new("docs/x.md")), "*.md matches only at the top");
    }

    #[test]
    fn globbing() {
        assert!(glob(b"*.c", b"main.c"));
        assert!(glob(b"[a-c]?", b"bx"));
        assert!(!glob(b"[^a-c]?", b"bx"));
        assert!(!glob(b"*.c", b"main.h"));
    }
}
