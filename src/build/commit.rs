//! `rimg commit`: a container's upper directory becomes a new layer on top of its image.
//!
//! The image config is kept from the container's image (as buildah does; docker would also copy the
//! container's command into Cmd, which surprises more often than it helps) with a history entry naming the
//! command the container ran.

use super::image::{layer_from_upper, now_rfc3339, source_date_epoch, NewImage};
use crate::runtime::{Containers, Status};
use crate::store::{ImageRecord, Store};

/// Commit container `key` (name or ID) as a new image, named `name` if given.
pub fn commit_container(
    store: &Store,
    containers: &Containers,
    key: &str,
    name: Option<&str>,
    message: Option<&str>,
    author: Option<&str>,
) -> Result<ImageRecord, String> {
    let st = containers.resolve(key).map_err(|e| e.to_string())?;
    if st.status == Status::Running {
        log::warn!(
            "committing running container {}: files being written may be caught half-way",
            st.short_id()
        );
    }
    let image_id = st
        .spec
        .image_id
        .clone()
        .ok_or_else(|| format!("container {} was not created from a stored image", st.short_id()))?;
    // The base and the new layer are held until the image is written (see store::lease).
    let lease = store.lease("commit").map_err(|e| e.to_string())?;
    let store = &store.with_lease(&lease);
    let base = store.image(&image_id).map_err(|e| format!("the container's image is gone: {e}"))?;
    store.hold_image(&base).map_err(|e| format!("the container's image is gone: {e}"))?;
    let mut img = NewImage::from_image(store, &base).map_err(|e| e.to_string())?;
    let upper = containers.dir_of(&st.id).upper();
    let below: Vec<_> = base.diff_ids.clone();
    let layer = layer_from_upper(store, &upper, &st.spec.lowers, &below, source_date_epoch())
        .map_err(|e| e.to_string())?;
    if let Some(a) = author {
        img.set_top("author", serde_json::json!(a));
    }
    img.push_layer(layer, &st.spec.process.args.join(" "), &now_rfc3339(), message);
    // Names are stored fully qualified (docker.io/library/x:latest), as every lookup expects.
    let name = name
        .map(|n| crate::reference::Reference::parse(n).map(|r| r.to_string()))
        .transpose()
        .map_err(|e| e.to_string())?;
    img.write(store, name.as_deref()).map_err(|e| e.to_string())
}
