//! Where each blob is known to live in registries: `ROOT/sources/sha256/<hex>`, one `REGISTRY REPOSITORY`
//! line per repository the blob was pulled from or pushed to (containerd keeps the same facts as
//! `containerd.io/distribution.source.<registry>=<repo>` labels on its content).
//!
//! A push asks the registry to mount a blob it lacks from one of those repositories
//! (`POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`) instead of uploading its bytes: pushing an
//! image again under another name of the same registry then moves no layer at all. The file is a hint, not
//! a truth: a registry that no longer has the blob there just declines the mount and the push uploads.

use super::{IoContext, Result, Store};
use crate::digest::Digest;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

impl Store {
    fn sources_path(&self, d: &Digest) -> PathBuf {
        self.root().join("sources/sha256").join(d.hex())
    }

    /// Remember that `registry`'s `repository` holds each of `digests`.
    pub fn add_sources(&self, digests: &[Digest], registry: &str, repository: &str) -> Result<()> {
        let line = format!("{registry} {repository}\n");
        if registry.contains(char::is_whitespace) || repository.contains(char::is_whitespace) {
            return Ok(()); // references never hold whitespace; refuse to corrupt the format if one did
        }
        let dir = self.root().join("sources/sha256");
        fs::DirBuilder::new().recursive(true).create(&dir).ctx("create", &dir)?;
        for d in digests {
            let path = self.sources_path(d);
            if fs::read_to_string(&path).is_ok_and(|known| known.lines().any(|l| l == line.trim_end())) {
                continue;
            }
            // One short O_APPEND write per line: concurrent writers never interleave inside a line.
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(super::perms::PRIVATE_FILE_MODE)
                .open(&path)
                .ctx("open", &path)?;
            f.write_all(line.as_bytes()).ctx("write", &path)?;
        }
        Ok(())
    }

    /// Repositories of `registry` known to hold blob `d`, most recently added first, without repeats.
    pub fn sources(&self, d: &Digest, registry: &str) -> Vec<String> {
        let Ok(text) = fs::read_to_string(self.sources_path(d)) else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        for l in text.lines().rev() {
            if let Some((reg, repo)) = l.split_once(' ') {
                if reg == registry && !out.iter().any(|r| r == repo) {
                    out.push(repo.to_string());
                }
            }
        }
        out
    }

    /// Forget the sources of blobs that are no longer stored (after a collection).
    pub(crate) fn prune_sources(&self) -> Result<()> {
        let dir = self.root().join("sources/sha256");
        let Ok(entries) = fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stored = format!("sha256:{name}").parse::<Digest>().is_ok_and(|d| self.has_blob(&d));
            if !stored {
                match fs::remove_file(e.path()) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err).ctx("remove", &e.path())
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_per_registry_newest_first_and_pruned_with_their_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"layer");
        store.put_blob(&d, b"layer").unwrap();
        store.add_sources(std::slice::from_ref(&d), "reg:5000", "a/app").unwrap();
        store.add_sources(std::slice::from_ref(&d), "other.io", "x/y").unwrap();
        store.add_sources(std::slice::from_ref(&d), "reg:5000", "b/app").unwrap();
        store.add_sources(std::slice::from_ref(&d), "reg:5000", "a/app").unwrap();
        assert_eq!(store.sources(&d, "reg:5000"), ["b/app", "a/app"]);
        assert_eq!(store.sources(&d, "other.io"), ["x/y"]);
        store.gc(&[], &[]).unwrap();
        assert!(store.sources(&d, "reg:5000").is_empty(), "forgotten with the blob");
    }
}
