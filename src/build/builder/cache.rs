//! The build cache: one key per step, chained from its parent's, and what a hit gives back.
//!
//! A key is the SHA-256 of its parts, each followed by a NUL byte. What each kind of step puts in its
//! key is written down here, in one place, because the key decides when a stored layer is reused: a
//! part left out reuses a layer the step would not have built, a part added for nothing costs rebuilds
//! after an upgrade (the unit tests pin the keys so a refactor cannot change them by accident).
//!
//! An entry (`ROOT/build-cache/<key>.json`) records the step's layer, if it made one, and when it first
//! ran: a hit reuses both, so a fully cached rebuild writes a byte-identical config and the same image.

use crate::build::image::LayerRef;
use crate::digest::Digest;
use crate::runtime::NetworkMode;
use crate::store::Store;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;

/// What the cache remembers of a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct CacheEntry {
    /// The step's layer (none for config-only steps).
    pub layer: Option<LayerRef>,
    /// When the step first ran (RFC 3339): its history entry's time.
    pub created: String,
}

/// The cache of one build: disabled with `--no-cache` (entries are still written, as docker does).
pub(super) struct BuildCache<'a> {
    store: &'a Store,
    read: bool,
}

impl<'a> BuildCache<'a> {
    /// The cache in `store`; `read` false makes every lookup a miss.
    pub fn new(store: &'a Store, read: bool) -> BuildCache<'a> {
        BuildCache { store, read }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.store.root().join("build-cache").join(format!("{key}.json"))
    }

    /// The entry for `key`, if there is one whose layer is still in the store. The layer is held by the
    /// build's lease before it is checked, so a prune cannot take it between the check and its use.
    pub fn get(&self, key: &str) -> Option<CacheEntry> {
        if !self.read {
            return None;
        }
        let e: CacheEntry = serde_json::from_slice(&std::fs::read(self.path(key)).ok()?).ok()?;
        if let Some(l) = &e.layer {
            self.store.hold_blobs(std::slice::from_ref(&l.digest)).ok()?;
            self.store.hold_layers(std::slice::from_ref(&l.diff_id)).ok()?;
            if !(self.store.has_blob(&l.digest) && self.store.has_layer(&l.diff_id)) {
                return None;
            }
        }
        Some(e)
    }

    /// Remember `e` under `key`; a cache that cannot be written only costs a rebuild later.
    pub fn put(&self, key: &str, e: &CacheEntry) {
        let path = self.path(key);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(data) = serde_json::to_vec(e) {
            if let Err(err) = crate::store::write_atomic(&path, &data) {
                log::warn!("build cache not saved: {err}");
            }
        }
    }
}

/// SHA-256 of `parts`, each followed by a NUL byte, in hex.
pub(super) fn key_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// `FROM scratch`: the root of a chain.
pub(super) fn scratch_key() -> String {
    key_of(&["scratch"])
}

/// `FROM image`: the image's manifest digest (a stage as base continues that stage's chain instead).
pub(super) fn image_key(manifest: &Digest) -> String {
    key_of(&["image", &manifest.to_string()])
}

/// A config-only step: its history text (`ENV A=1`) after its parent.
pub(super) fn config_key(parent: &str, text: &str) -> String {
    key_of(&[parent, text])
}

/// What a RUN step's result depends on besides its parent's layers.
pub(super) struct RunInputs<'a> {
    /// Its history text (`RUN ["/bin/sh","-c","…"]`).
    pub created_by: &'a str,
    /// The ARG values it sees, `K=V` sorted (ENV is in the config, so in the parent chain already).
    pub arg_env: &'a [String],
    /// The user it runs as.
    pub user: &'a str,
    /// Its working directory.
    pub cwd: &'a str,
    /// Its network.
    pub network: NetworkMode,
}

/// A RUN step.
pub(super) fn run_key(parent: &str, run: &RunInputs<'_>) -> String {
    key_of(&[
        parent,
        run.created_by,
        &run.arg_env.join("\n"),
        run.user,
        run.cwd,
        &format!("{:?}", run.network),
    ])
}

/// What a COPY/ADD step's result depends on besides its parent's layers.
pub(super) struct CopyInputs<'a> {
    /// Its history text (`COPY a b /dest`).
    pub created_by: &'a str,
    /// The content hash of its sources ([`crate::build::context::hash_sources`]).
    pub content: &'a str,
    /// Its heredocs, each `name\nbody`.
    pub heredocs: &'a str,
    /// `--chown` ids.
    pub owner: Option<(u32, u32)>,
    /// `--chmod` mode.
    pub mode: Option<u32>,
    /// Whether the destination is a directory.
    pub dest_is_dir: bool,
    /// `--from`: the stage's key or the image's manifest digest; empty for the context.
    pub from: &'a str,
}

/// A COPY or ADD step.
pub(super) fn copy_key(parent: &str, copy: &CopyInputs<'_>) -> String {
    key_of(&[
        parent,
        copy.created_by,
        copy.content,
        copy.heredocs,
        &format!("{:?}{:?}{}", copy.owner, copy.mode, copy.dest_is_dir),
        copy.from,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys as rimg computed them before the builder was split (6aa044c; recomputed independently
    /// with Python's hashlib, the config ones also found in a cache that rimg wrote): a change here
    /// makes every user's cache miss after an upgrade, which must be a decision, not an accident.
    #[test]
    fn keys_are_the_ones_rimg_has_always_computed() {
        let scratch = scratch_key();
        assert_eq!(scratch, "d1c4352354cd8d12c4709c9fb132018669135d69fb8a82f10bb869822add48f7");
        let arg = config_key(&scratch, "ARG V");
        assert_eq!(arg, "57457e44a197c84b8d14218fdb11460da3ed16796a90e72e363f8fd0207090ae");
        assert_eq!(
            config_key(&arg, "ENV A=1 B=two words PATH=/usr/bin"),
            "c95df7b33543f65d8468c20af5b1b1644a221884e42989c58adfcecb35f1bd76"
        );
        let manifest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(image_key(&manifest), "3e327167176c3b898aecf5bf7c7e45741b81c7e9f36198c588161979fa49347f");
        let arg_env = ["B=b".to_string(), "Z=z".to_string()];
        let run = RunInputs {
            created_by: r#"RUN ["/bin/sh","-c","echo hi"]"#,
            arg_env: &arg_env,
            user: "app",
            cwd: "/srv",
            network: NetworkMode::None,
        };
        assert_eq!(
            run_key(&scratch, &run),
            "28b769c4d7dd38400dc3a3fe9ac492d3e97bb5366c6f0a07c27bec02fa50afe6"
        );
        let copy = CopyInputs {
            created_by: "COPY a b /dest/",
            content: "ctx-hash",
            heredocs: "EOF\nhello\n",
            owner: Some((1000, 1000)),
            mode: Some(0o644),
            dest_is_dir: true,
            from: "",
        };
        assert_eq!(
            copy_key(&scratch, &copy),
            "6ea97bec0f3bcc0cbb67bba3fe4a6490196b8e90130e5e21f8bc3ffce552c144"
        );
    }

    #[test]
    fn every_input_of_a_step_is_in_its_key() {
        let arg_env = ["A=1".to_string()];
        let base = RunInputs {
            created_by: "RUN x",
            arg_env: &arg_env,
            user: "",
            cwd: "/",
            network: NetworkMode::None,
        };
        let key = run_key("p", &base);
        assert_ne!(key, run_key("q", &base), "parent");
        assert_ne!(key, run_key("p", &RunInputs { created_by: "RUN y", ..base }));
        assert_ne!(key, run_key("p", &RunInputs { arg_env: &[], ..base }));
        assert_ne!(key, run_key("p", &RunInputs { user: "1", ..base }));
        assert_ne!(key, run_key("p", &RunInputs { cwd: "/a", ..base }));
        assert_ne!(key, run_key("p", &RunInputs { network: NetworkMode::Host, ..base }));
        // Parts are separated: moving text from one part to the next changes the key.
        assert_ne!(key_of(&["ab", "c"]), key_of(&["a", "bc"]));
    }

    fn entry(layer: Option<LayerRef>) -> CacheEntry {
        CacheEntry { layer, created: "2023-11-14T22:13:20Z".into() }
    }

    #[test]
    fn entries_round_trip_and_no_cache_misses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = BuildCache::new(&store, true);
        assert_eq!(cache.get("k"), None);
        cache.put("k", &entry(None));
        assert_eq!(cache.get("k"), Some(entry(None)));
        assert_eq!(BuildCache::new(&store, false).get("k"), None, "--no-cache reads nothing");
    }

    #[test]
    fn an_entry_whose_layer_is_gone_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = BuildCache::new(&store, true);
        let d = |c: &str| -> Digest { format!("sha256:{}", c.repeat(64)).parse().unwrap() };
        let layer = LayerRef { digest: d("1"), size: 1, media_type: "m".into(), diff_id: d("2") };
        cache.put("k", &entry(Some(layer)));
        assert_eq!(cache.get("k"), None);
    }
}
