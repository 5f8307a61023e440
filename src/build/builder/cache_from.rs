//! `--cache-from IMAGE`: steps answered from an image built before (typically pulled from a registry),
//! as docker's builder does without BuildKit's cache metadata. An image is a cache source for a stage
//! when its layers and history begin with the stage's base; from there a step is a hit when the
//! source's next history entry was made by the same instruction (`created_by`) and is of the same kind
//! (layer or not); the first mismatch ends the source for the rest of the stage, since everything after
//! it was built on something else.
//!
//! `COPY`/`ADD` history text does not name the copied content, so a source never answers them: they are
//! run (they are cheap), and the source stays in step only if the layer they make is the very layer it
//! has next (same `diff_id`). `RUN` is answered by text, as docker does: a `RUN` whose effect depends on
//! more than its text (the network, a moving base tag) is the user's to invalidate (`--no-cache`).

use super::cache::CacheEntry;
use crate::build::image::{LayerRef, NewImage};
use crate::digest::Digest;

/// One `--cache-from` image.
pub(super) struct CacheSource {
    layers: Vec<LayerRef>,
    /// (created_by, created, empty_layer) of each history entry.
    history: Vec<(String, String, bool)>,
}

/// Where each source still in step with a stage stands: (source, next history entry, next layer).
#[derive(Debug, Clone, Default)]
pub(super) struct Cursor(Vec<(usize, usize, usize)>);

impl CacheSource {
    /// The image's layers and history.
    pub(super) fn of(image: &NewImage) -> CacheSource {
        let history = image
            .config()
            .history()
            .iter()
            .map(|h| {
                (
                    h.created_by().clone().unwrap_or_default(),
                    h.created().clone().unwrap_or_default(),
                    h.empty_layer().unwrap_or(false),
                )
            })
            .collect();
        CacheSource { layers: image.layers().to_vec(), history }
    }
}

/// The sources a stage on `base` can use: those that begin with `base`'s layers and history.
pub(super) fn start(sources: &[CacheSource], base: &NewImage) -> Cursor {
    let base = CacheSource::of(base);
    let mut c = Cursor::default();
    for (i, s) in sources.iter().enumerate() {
        let layers_match = s.layers.len() >= base.layers.len()
            && s.layers.iter().zip(&base.layers).all(|(a, b)| a.diff_id == b.diff_id);
        let history_match = s.history.len() >= base.history.len()
            && s.history.iter().zip(&base.history).all(|(a, b)| a.0 == b.0 && a.2 == b.2);
        if layers_match && history_match {
            c.0.push((i, base.history.len(), base.layers.len()));
        }
    }
    c
}

/// A step (made by `created_by`, a layer step or not) answered by a source: its layer and time. The
/// sources that do not have it next drop out.
pub(super) fn hit(
    sources: &[CacheSource],
    cursor: &mut Cursor,
    created_by: &str,
    layer: bool,
) -> Option<CacheEntry> {
    let mut found = None;
    cursor.0.retain_mut(|(i, h, l)| {
        let s = &sources[*i];
        let Some((by, created, empty)) = s.history.get(*h) else { return false };
        if by != created_by || *empty == layer || (layer && *l >= s.layers.len()) {
            return false;
        }
        if found.is_none() {
            found = Some(CacheEntry { layer: layer.then(|| s.layers[*l].clone()), created: created.clone() });
        }
        *h += 1;
        if layer {
            *l += 1;
        }
        true
    });
    found
}

/// After a step that ran (a COPY, or a miss): only the sources whose next entry is this very layer stay.
pub(super) fn follow(
    sources: &[CacheSource],
    cursor: &mut Cursor,
    created_by: &str,
    diff_id: Option<&Digest>,
) {
    cursor.0.retain_mut(|(i, h, l)| {
        let s = &sources[*i];
        let Some((by, _, empty)) = s.history.get(*h) else { return false };
        let same_layer = match diff_id {
            Some(d) => !*empty && s.layers.get(*l).is_some_and(|x| &x.diff_id == d),
            None => *empty,
        };
        if by != created_by || !same_layer {
            return false;
        }
        *h += 1;
        if diff_id.is_some() {
            *l += 1;
        }
        true
    });
}
