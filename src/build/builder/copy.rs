//! `COPY` and `ADD`: the step's layer is written directly as a tar, without a container. Sources are
//! resolved inside their root (the context, or a read-only view of a stage or image for `--from`) with
//! [`crate::layer::walk`], so nothing outside it can be read (see SECURITY.md).

use super::cache::{copy_key, CacheEntry, CopyInputs};
use super::{BaseResolver, Builder, StepError};
use crate::build::context::{self, CopyTar, Ignore, Owner, Source};
use crate::build::dockerfile::Heredoc;
use crate::build::image::{layer_from_tar, now_rfc3339, source_date_epoch};
use crate::build::rootfs::MergedView;
use crate::layer::walk::Dir;
use crate::runtime;
use std::path::{Path, PathBuf};

/// A COPY or ADD instruction as parsed (words unexpanded).
pub(super) struct CopyArgs<'a> {
    /// ADD rather than COPY.
    pub add: bool,
    /// Sources.
    pub srcs: &'a [String],
    /// Destination.
    pub dest: &'a str,
    /// `--from`.
    pub from: Option<&'a str>,
    /// `--chown`.
    pub chown: Option<&'a str>,
    /// `--chmod`.
    pub chmod: Option<&'a str>,
    /// Inline files.
    pub heredocs: &'a [Heredoc],
}

/// Where a COPY writes.
struct Destination {
    /// As absolute path in the image (for the history text).
    abs: String,
    /// Relative to the image root.
    rel: PathBuf,
    /// Whether sources go into it (rather than becoming it).
    is_dir: bool,
}

impl Builder<'_> {
    /// A COPY/ADD step: answered from the cache (keyed by the sources' content), or written as a tar.
    pub(super) fn copy_step(
        &mut self,
        c: &CopyArgs<'_>,
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(), StepError> {
        let kw = if c.add { "ADD" } else { "COPY" };
        let dest = self.x(c.dest)?;
        let srcs: Vec<String> = c.srcs.iter().map(|s| self.x(s)).collect::<Result<_, _>>()?;
        let chown = c.chown.map(|s| self.x(s)).transpose()?;
        let mode = match c.chmod {
            Some(m) => {
                Some(u32::from_str_radix(m, 8).map_err(|_| format!("--chmod={m} is not an octal mode"))?)
            }
            None => None,
        };
        let to = self.copy_dest(&dest, &srcs)?;
        // Where the sources come from: the context, or the rootfs of a stage/image (mounted read-only).
        let (src_root, from_id, from_view) = self.copy_root(c.from, resolve_base)?;
        let ids = chown.map(|spec| self.resolve_chown(&spec)).transpose()?;
        let owner = Owner { ids, mode, keep_ids: c.from.is_some() };
        let ignore = if c.from.is_none() { self.ignore.clone() } else { Ignore::default() };
        let sources = copy_sources(c.add, &srcs, &src_root, &ignore)?;
        let content = context::hash_sources(&sources, &ignore).map_err(|e| e.to_string())?;
        let heredoc_text: String = c.heredocs.iter().map(|h| format!("{}\n{}", h.name, h.body)).collect();
        let created_by = format!("{kw} {} {}", srcs.join(" "), to.abs);
        let inputs = CopyInputs {
            created_by: &created_by,
            content: &content,
            heredocs: &heredoc_text,
            owner: ids,
            mode,
            dest_is_dir: to.is_dir,
            from: &from_id,
        };
        let key = copy_key(&self.current()?.key, &inputs);
        if let Some(hit) = self.cached(&key, &created_by, false) {
            return self.finish_layer_step(key, hit, &created_by);
        }
        self.executed += 1;
        let plan = CopyPlan {
            add: c.add,
            owner,
            clamp: source_date_epoch(),
            ignore: c.from.is_none().then_some(&ignore),
            heredocs: c.heredocs,
            sources: &sources,
            dest_rel: &to.rel,
            dest_is_dir: to.is_dir,
        };
        let layer =
            layer_from_tar(self.store, &self.current()?.image.diff_ids(), &mut |out| plan.write(out))?;
        // The sources' descriptors before the view they are in.
        drop(sources);
        drop(src_root);
        drop(from_view);
        let entry = CacheEntry { layer: Some(layer), created: now_rfc3339() };
        self.cache.put(&key, &entry);
        self.finish_layer_step(key, entry, &created_by)
    }

    /// Where a COPY writes. docker's rule: the destination is a directory when written as one (`dir/`,
    /// `.`), when several sources (or a wildcard) go there, or when it already is one in the image.
    fn copy_dest(&self, dest: &str, srcs: &[String]) -> Result<Destination, StepError> {
        let abs = if dest.starts_with('/') {
            dest.to_string()
        } else {
            format!("{}/{dest}", self.workdir().trim_end_matches('/'))
        };
        let rel = normalize_rel(&abs);
        let lowers_now = self.current()?.image.layer_dirs(self.store);
        let exists_as_dir = crate::layer::lower::lookup(&lowers_now, rel.as_os_str().as_encoded_bytes())
            .ok()
            .flatten()
            .is_some_and(|(_, m)| m.is_dir());
        let is_dir = dest.ends_with('/')
            || dest.ends_with("/.")
            || dest == "."
            || srcs.len() > 1
            || srcs.iter().any(|s| s.contains(['*', '?']))
            || exists_as_dir;
        Ok(Destination { abs, rel, is_dir })
    }

    /// The root COPY's sources are resolved in, opened as the root of a walk: the context, or (`--from`)
    /// a read-only view of a stage's or an image's layers, which the caller keeps until the copy is done.
    /// Also the cache identity of that root (empty for the context: its content is hashed instead).
    fn copy_root(
        &self,
        from: Option<&str>,
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(Dir, String, Option<MergedView>), StepError> {
        let Some(f) = from else {
            let root = Dir::open(&self.opts.context).map_err(|e| format!("build context: {e}"))?;
            return Ok((root, String::new(), None));
        };
        let f = self.x(f)?;
        let (dirs, id) = if let Some(s) = self.stage_named(&f) {
            (s.image.layer_dirs(self.store), s.key.clone())
        } else if let Ok(i) = f.parse::<usize>().map_err(|_| ()).and_then(|i| self.stages.get(i).ok_or(())) {
            (i.image.layer_dirs(self.store), i.key.clone())
        } else {
            let rec = resolve_base(&f, None)?;
            (rec.layer_dirs(self.store), rec.manifest_digest.to_string())
        };
        let view = MergedView::mount(&dirs, self.store)?;
        let root = Dir::open(&view.path).map_err(|e| format!("--from={f}: {e}"))?;
        Ok((root, id, Some(view)))
    }

    /// `--chown=user:group` to numeric ids, names looked up in the stage's own /etc/passwd and /etc/group.
    fn resolve_chown(&self, spec: &str) -> Result<(u32, u32), String> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if let (Ok(uid), Some(Ok(gid))) = (u.parse::<u32>(), g.map(str::parse::<u32>)) {
            return Ok((uid, gid));
        }
        let dirs = self.stages.last().map(|s| s.image.layer_dirs(self.store)).unwrap_or_default();
        let view = MergedView::mount(&dirs, self.store)?;
        // The stage's /etc/passwd and /etc/group, read inside its rootfs: a symlink there must not make
        // rimg read the host's.
        let read = |f: &str| read_in_root(&view.path, f).map_err(|e| format!("--chown={spec}: {e}"));
        let id = runtime::user::resolve_with(&read("etc/passwd")?, &read("etc/group")?, spec)
            .map_err(|e| format!("--chown={spec}: {e}"))?;
        // A group given by number or name overrides the user's primary group inside resolve already.
        Ok((id.uid, id.gid))
    }
}

/// Resolve the sources of a COPY/ADD inside `root` (heredocs excepted; URLs refused).
fn copy_sources(add: bool, srcs: &[String], root: &Dir, ignore: &Ignore) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for s in srcs.iter().filter(|s| !s.starts_with("<<")) {
        if add && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")) {
            return Err(format!(
                "ADD from a URL ({s}) is not supported: download it in a RUN step or into the context"
            ));
        }
        sources.extend(context::resolve_sources(root, s, ignore)?);
    }
    Ok(sources)
}

/// What a COPY/ADD writes into its layer tar.
struct CopyPlan<'a> {
    add: bool,
    owner: Owner,
    clamp: Option<u64>,
    ignore: Option<&'a Ignore>,
    heredocs: &'a [Heredoc],
    sources: &'a [Source],
    dest_rel: &'a Path,
    dest_is_dir: bool,
}

impl CopyPlan<'_> {
    /// The layer tar: heredocs, then each source (an ADDed local archive unpacked, a directory's
    /// contents into the destination, anything else under its own name when the destination is a
    /// directory).
    fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut t = CopyTar::new(out, self.owner, self.clamp);
        if let Some(ig) = self.ignore {
            t = t.with_ignore(ig);
        }
        let into_dir = |name: &Path| {
            if self.dest_is_dir {
                self.dest_rel.join(name)
            } else {
                self.dest_rel.to_path_buf()
            }
        };
        for h in self.heredocs {
            let target = if self.heredocs.len() > 1 {
                self.dest_rel.join(&h.name)
            } else {
                into_dir(Path::new(&h.name))
            };
            t.add_bytes(&target, h.body.as_bytes())?;
        }
        for s in self.sources {
            let meta = s.entry.meta();
            if self.add && meta.is_file() && looks_like_archive(&mut s.entry.open_file()?) {
                t.add_archive(s.entry.open_file()?, self.dest_rel)?;
            } else if meta.is_dir() {
                t.add(s, self.dest_rel)?;
            } else {
                t.add(s, &into_dir(s.rel.file_name().map(Path::new).unwrap_or(Path::new(""))))?;
            }
        }
        t.finish()
    }
}

/// The text of the file `rel` of the rootfs at `root`, resolved inside it; empty when it is missing.
fn read_in_root(root: &Path, rel: &str) -> std::io::Result<String> {
    let mut data = Vec::new();
    if let Some(found) = Dir::open(root)?.resolve(Path::new(rel))?.filter(|r| r.entry.meta().is_file()) {
        std::io::Read::read_to_end(&mut found.entry.open_file()?, &mut data)?;
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// `/a/./b/../c` → `a/c`: the destination as a path relative to the image root.
fn normalize_rel(abs: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(abs).components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// gzip, zstd or a plain tar (`ustar` at 257): what ADD unpacks instead of copying.
fn looks_like_archive(f: &mut std::fs::File) -> bool {
    let mut magic = [0u8; 262];
    let n = std::io::Read::read(f, &mut magic).unwrap_or(0);
    let m = &magic[..n];
    m.starts_with(&[0x1f, 0x8b])
        || m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &m[257..262] == b"ustar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_relative_to_the_image_root() {
        assert_eq!(normalize_rel("/a/./b/../c"), Path::new("a/c"));
        assert_eq!(normalize_rel("/../../etc"), Path::new("etc"));
        assert_eq!(normalize_rel("/"), Path::new(""));
    }
}
