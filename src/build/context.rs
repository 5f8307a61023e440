//! The build context: which files COPY/ADD may see (`.dockerignore`), their content hash for the build
//! cache, and the tar entries a COPY turns them into.
//!
//! `.dockerignore` matching is written here because its rules are docker's own (Go `filepath.Match` per
//! path component, `**` for any number of components, `!` exceptions, last match wins, a directory's
//! exclusion covering its contents): neither gitignore crates nor shell globs implement exactly that.

use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    /// Read `CONTEXT/.dockerignore` (absent = nothing ignored).
    pub fn load(context: &Path) -> io::Result<Ignore> {
        match fs::read_to_string(context.join(".dockerignore")) {
            Ok(text) => Ok(Ignore::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ignore::default()),
            Err(e) => Err(e),
        }
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

/// A context source that a COPY resolved: the file or directory on disk and its path relative to the
/// context.
#[derive(Debug, Clone)]
pub struct Source {
    /// On-disk path.
    pub path: PathBuf,
    /// Relative to the context root.
    pub rel: PathBuf,
}

/// Resolve a COPY source (may be a glob in its last component) inside `root`; never outside it.
pub fn resolve_sources(root: &Path, src: &str, ignore: &Ignore) -> Result<Vec<Source>, String> {
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
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let is_glob = name.contains(['*', '?', '[']);
    let mut out = Vec::new();
    if is_glob {
        let dir = root.join(&parent);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| format!("COPY source {src:?}: {e}"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| glob(name.as_bytes(), n.as_bytes()))
            .collect();
        names.sort();
        for n in names {
            let r = parent.join(&n);
            if !ignore.excluded(&r) {
                out.push(Source { path: root.join(&r), rel: r });
            }
        }
    } else if rel.as_os_str().is_empty() || !ignore.excluded(&rel) {
        let path = root.join(&rel);
        if path.symlink_metadata().is_err() {
            return Err(format!("COPY failed: file not found in build context: {src}"));
        }
        out.push(Source { path, rel });
    }
    if out.is_empty() {
        return Err(format!("COPY failed: no source files were specified or matched: {src}"));
    }
    Ok(out)
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
    context_root: Option<&'a Path>,
    mtime_clamp: Option<u64>,
}

impl<'a> CopyTar<'a> {
    /// Start writing to `out`.
    pub fn new(out: &'a mut dyn Write, owner: Owner, mtime_clamp: Option<u64>) -> CopyTar<'a> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        CopyTar { tar, owner, ignore: None, context_root: None, mtime_clamp }
    }

    /// Skip entries the context's `.dockerignore` excludes (paths relative to `root`).
    pub fn with_ignore(mut self, ignore: &'a Ignore, root: &'a Path) -> Self {
        self.ignore = Some(ignore);
        self.context_root = Some(root);
        self
    }

    /// Copy `src` (file, dir or symlink) to `dest` in the image (`dest` relative, no leading slash). A
    /// directory's contents go into `dest`, as docker copies directories.
    pub fn add(&mut self, src: &Path, dest: &Path) -> io::Result<()> {
        let meta = src.symlink_metadata()?;
        if meta.is_dir() {
            self.entry(src, dest, &meta)?;
            let mut names: Vec<_> = fs::read_dir(src)?.flatten().map(|e| e.file_name()).collect();
            names.sort();
            for n in names {
                let child = src.join(&n);
                if let (Some(ig), Some(root)) = (self.ignore, self.context_root) {
                    if let Ok(rel) = child.strip_prefix(root) {
                        if ig.excluded(rel) {
                            continue;
                        }
                    }
                }
                self.add(&child, &dest.join(&n))?;
            }
            Ok(())
        } else {
            self.entry(src, dest, &meta)
        }
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

    fn entry(&mut self, src: &Path, dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        let (u, g) = match (self.owner.ids, self.owner.keep_ids) {
            (Some(ids), _) => ids,
            (None, true) => (meta.uid(), meta.gid()),
            (None, false) => (0, 0),
        };
        h.set_uid(u.into());
        h.set_gid(g.into());
        h.set_username("")?;
        h.set_groupname("")?;
        if let Some(m) = self.owner.mode {
            if !meta.file_type().is_symlink() {
                h.set_mode(m);
            }
        } else {
            h.set_mode(meta.permissions().mode() & 0o7777);
        }
        if let Some(c) = self.mtime_clamp {
            h.set_mtime(h.mtime().unwrap_or(0).min(c));
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(src)?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            self.tar.append_link(&mut h, dest, &target)
        } else if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            self.tar.append_data(&mut h, dest, io::empty())
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            let f = fs::File::open(src)?;
            self.tar.append_data(&mut h, dest, f)
        } else {
            // fifos, sockets and devices in a build context are skipped, as docker does for sockets.
            Ok(())
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
pub fn hash_sources(sources: &[Source], ignore: &Ignore, root: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    for s in sources {
        hash_tree(&mut h, &s.path, &s.rel, ignore, root)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_tree(h: &mut Sha256, path: &Path, rel: &Path, ignore: &Ignore, root: &Path) -> io::Result<()> {
    let meta = path.symlink_metadata()?;
    h.update(rel.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(meta.permissions().mode().to_le_bytes());
    let ft = meta.file_type();
    if ft.is_symlink() {
        h.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if ft.is_file() {
        h.update(meta.len().to_le_bytes());
        let mut f = fs::File::open(path)?;
        io::copy(&mut f, h)?;
    } else if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)?.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let child = path.join(&n);
            if let Ok(r) = child.strip_prefix(root) {
                if ignore.excluded(r) {
                    continue;
                }
            }
            hash_tree(h, &child, &rel.join(&n), ignore, root)?;
        }
    }
    h.update([1]);
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
