//! The push side of the client: skip blobs the registry already has, mount them across repositories,
//! upload the rest (one PUT for small blobs, PATCH chunks for large ones, each chunk retried on its own),
//! and put the manifest last. Pushes always go to the origin, never to a Docker Hub mirror.

use super::client::Client;
use super::error::{Access, RegistryError};
use super::transport::{error_message, headers, Endpoint, Req};
use crate::digest::Digest;
use crate::reference::Reference;
use reqwest::blocking::Response;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use std::io::Read;

/// Blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size. Each chunk is held in
/// memory (so it can be retried), which bounds memory per upload thread.
pub const UPLOAD_CHUNK: usize = 8 << 20;

impl Client {
    fn origin(&self, registry: &str) -> Result<Endpoint, RegistryError> {
        let Some(origin) = self.t.candidates(registry).pop() else {
            return Err(RegistryError::Unreachable {
                registry: registry.into(),
                reason: "no endpoint".into(),
            });
        };
        self.t.endpoint(&origin)
    }

    fn push_req(&self, r: &Reference, method: Method, path: String) -> Req {
        Req {
            method,
            path,
            headers: Default::default(),
            body: None,
            scopes: vec![format!("repository:{}:pull,push", r.repository)],
            access: Access::Push,
            name: r.name(),
            registry: r.registry.clone(),
        }
    }

    /// Whether blob `d` is already in `r`'s repository (HEAD); its size if so.
    pub fn blob_exists(&self, r: &Reference, d: &Digest) -> Result<Option<u64>, RegistryError> {
        let ep = self.origin(&r.registry)?;
        let req = self.push_req(r, Method::HEAD, format!("v2/{}/blobs/{d}", r.repository));
        let resp = self.t.send(&ep, &req)?;
        match resp.status() {
            // HEAD has no body, so the size is read from the header (not reqwest's body length).
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.t.status_error(resp, "HEAD", &ep.display, None)),
        }
    }

    /// Ask the registry to link blob `d` from another repository of the same registry into `r`'s, without
    /// uploading it. Returns false when the registry declined (the caller then uploads).
    pub fn mount_blob(
        &self,
        r: &Reference,
        d: &Digest,
        from_repository: &str,
    ) -> Result<bool, RegistryError> {
        let ep = self.origin(&r.registry)?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("mount", &d.to_string()).append_pair("from", from_repository);
        let mut req =
            self.push_req(r, Method::POST, format!("v2/{}/blobs/uploads/?{}", r.repository, query.finish()));
        req.scopes.push(format!("repository:{from_repository}:pull"));
        req.headers = headers(&[(CONTENT_LENGTH, "0")]);
        req.body = Some(Vec::new());
        let resp = match self.t.send(&ep, &req) {
            Ok(resp) => resp,
            // No pull access to the source repository: just upload instead (as docker does). A missing push
            // right surfaces from the upload itself.
            Err(RegistryError::Denied { detail, .. }) => {
                log::debug!("mount of {d} from {from_repository} refused: {detail}");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // Declined: the registry opened an upload session instead; cancel it (best effort).
                if let Some(loc) = location(&resp) {
                    let cancel = self.push_req(r, Method::DELETE, loc);
                    let _ = self.t.send(&ep, &cancel);
                }
                Ok(false)
            }
            _ => Err(self.t.status_error(resp, "POST", &ep.display, None)),
        }
    }

    /// Upload blob `d` of `size` bytes read from `reader`. `progress` is called with the bytes sent so far.
    /// The registry verifies the digest when the upload is committed.
    pub fn upload_blob(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
        reader: &mut dyn Read,
        progress: &dyn Fn(u64),
    ) -> Result<(), RegistryError> {
        let ep = self.origin(&r.registry)?;
        let mut start = self.push_req(r, Method::POST, format!("v2/{}/blobs/uploads/", r.repository));
        start.headers = headers(&[(CONTENT_LENGTH, "0")]);
        start.body = Some(Vec::new());
        let resp = self.t.send(&ep, &start)?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.t.status_error(resp, "POST", &ep.display, None));
        }
        let mut loc =
            location(&resp).ok_or_else(|| self.bad_upload(&ep, "upload session without Location"))?;
        let read_err = |e: std::io::Error| RegistryError::Transfer {
            registry: ep.display.clone(),
            what: format!("reading blob {d} for upload"),
            reason: e.to_string(),
        };
        let mut sent: u64 = 0;
        let mut last_chunk = Vec::new();
        if size as usize > UPLOAD_CHUNK {
            loop {
                let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
                reader.take(UPLOAD_CHUNK as u64).read_to_end(&mut chunk).map_err(read_err)?;
                if chunk.is_empty() {
                    break;
                }
                let end = sent + chunk.len() as u64 - 1;
                let mut patch = self.push_req(r, Method::PATCH, loc.clone());
                patch.headers = headers(&[
                    (CONTENT_TYPE, "application/octet-stream"),
                    (CONTENT_RANGE, &format!("{sent}-{end}")),
                    (CONTENT_LENGTH, &chunk.len().to_string()),
                ]);
                patch.body = Some(chunk);
                let resp = self.t.send(&ep, &patch)?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.t.status_error(resp, "PATCH", &ep.display, None));
                }
                sent = end + 1;
                progress(sent);
                loc = location(&resp).unwrap_or(loc);
            }
        } else {
            reader.take(size + 1).read_to_end(&mut last_chunk).map_err(read_err)?;
            sent = last_chunk.len() as u64;
        }
        if sent != size {
            return Err(self.bad_upload(&ep, &format!("blob {d}: read {sent} bytes, expected {size}")));
        }
        let mut url = url::Url::parse(&loc)
            .or_else(|_| ep.base.join(&loc))
            .map_err(|e| self.bad_upload(&ep, &format!("bad upload location {loc:?}: {e}")))?;
        url.query_pairs_mut().append_pair("digest", &d.to_string());
        let mut put = self.push_req(r, Method::PUT, url.to_string());
        put.headers = headers(&[
            (CONTENT_TYPE, "application/octet-stream"),
            (CONTENT_LENGTH, &last_chunk.len().to_string()),
        ]);
        put.body = Some(last_chunk);
        let resp = self.t.send(&ep, &put)?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.t.status_error(resp, "PUT", &ep.display, None));
        }
        progress(size);
        Ok(())
    }

    /// Put a manifest (or index) under `r`'s tag (or digest); returns its digest after checking the
    /// registry computed the same.
    pub fn put_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest, RegistryError> {
        let ep = self.origin(&r.registry)?;
        let digest = Digest::of_bytes(body);
        let target = r.tag.clone().unwrap_or_else(|| r.manifest_ref());
        let mut put = self.push_req(r, Method::PUT, format!("v2/{}/manifests/{target}", r.repository));
        put.headers = headers(&[(CONTENT_TYPE, media_type), (CONTENT_LENGTH, &body.len().to_string())]);
        put.body = Some(body.to_vec());
        let resp = self.t.send(&ep, &put)?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.t.status_error(resp, "PUT", &ep.display, None));
        }
        let answered =
            resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from);
        let _ = error_message(resp);
        if let Some(h) = answered.and_then(|h| h.parse::<Digest>().ok()) {
            if h != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest pushed to {r}"),
                    expected: digest,
                    actual: h,
                });
            }
        }
        Ok(digest)
    }

    fn bad_upload(&self, ep: &Endpoint, reason: &str) -> RegistryError {
        RegistryError::Transfer {
            registry: ep.display.clone(),
            what: "blob upload".into(),
            reason: reason.into(),
        }
    }
}

/// The `Location` of a response, resolved against the request URL.
fn location(resp: &Response) -> Option<String> {
    let loc = resp.headers().get(LOCATION)?.to_str().ok()?;
    resp.url().join(loc).ok().map(|u| u.to_string())
}
