//! Layer blob compression: which codec a blob uses, and a streaming decoder for it.
//!
//! Registries label layers with a media type, but the label is only a hint: docker and containerd both
//! sniff the leading magic bytes and trust those, because some producers mislabel (e.g. an uncompressed
//! tar pushed as `tar.gzip`). rimg does the same: the magic bytes win, the media type decides only when
//! the bytes are inconclusive.

use std::io::{self, Read};

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), possibly several concatenated members, as Go's `gzip.Reader` accepts.
    Gzip,
    /// Zstandard frames.
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The compression a layer media type announces, or `None` for a media type that is not a layer
    /// type rimg knows (the caller should then sniff). Handles the OCI types (incl. the
    /// non-distributable variants) and the Docker schema2 ones.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        // Parameters (`; charset=…`) never appear on layer types in practice, but tolerate them.
        let mt = media_type.split(';').next().unwrap_or("").trim();
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/x-tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The compression the first bytes of a blob show, or `None` when they are not a known magic
    /// (a tar stream starts with a file name, so this is the uncompressed case in practice).
    pub fn sniff(prefix: &[u8]) -> Option<Compression> {
        if prefix.starts_with(&ZSTD_MAGIC) {
            Some(Compression::Zstd)
        } else if prefix.starts_with(&GZIP_MAGIC) {
            Some(Compression::Gzip)
        } else {
            None
        }
    }

    /// The media type suffix OCI uses for this compression (`""`, `"+gzip"`, `"+zstd"`).
    pub fn oci_suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "+gzip",
            Compression::Zstd => "+zstd",
        }
    }
}

/// Wrap `reader` (a compressed blob stream) in a decoder for `c`, producing the uncompressed tar stream.
///
/// gzip uses [`flate2::bufread::MultiGzDecoder`]: Go's `gzip.Reader` (docker, containerd) reads
/// concatenated members by default, so a layer written by `pigz --independent` or by concatenation must
/// decode here too; for the usual single member it behaves exactly like `GzDecoder`.
pub fn decompress<'a, R: Read + Send + 'a>(
    c: Compression,
    reader: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(reader),
        Compression::Gzip => {
            Box::new(flate2::bufread::MultiGzDecoder::new(io::BufReader::with_capacity(128 * 1024, reader)))
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(reader)?;
            // Layers built with `--long` need a window above zstd's default 128 MiB decoder limit;
            // 2 GiB (log 31) is the format maximum and what containerd allows.
            d.window_log_max(31)?;
            Box::new(d)
        }
    })
}

/// Detect the compression of `reader` (magic bytes first, then `media_type`), and return the decoded
/// stream. The sniffed bytes are not lost: they are chained back in front of the stream.
pub fn decompress_auto<'a, R: Read + Send + 'a>(
    media_type: Option<&str>,
    mut reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut prefix = [0u8; 4];
    let mut n = 0;
    while n < prefix.len() {
        match reader.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let c = Compression::sniff(&prefix[..n])
        .or_else(|| media_type.and_then(Compression::from_media_type))
        .unwrap_or(Compression::None);
    let chained = io::Cursor::new(prefix).take(n as u64).chain(reader);
    Ok((c, decompress(c, chained)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Some(Gzip)),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Some(Gzip)),
            ("application/vnd.oci.image.config.v1+json", Option::None),
        ];
        for (mt, want) in cases {
            assert_eq!(Compression::from_media_type(mt), want, "{mt}");
        }
    }

    fn roundtrip(c: Compression, data: &[u8]) -> Vec<u8> {
        let compressed = match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        };
        // Mislabel on purpose: the magic bytes must win over the media type.
        let (got, mut r) =
            decompress_auto(Some("application/vnd.oci.image.layer.v1.tar"), &compressed[..]).unwrap();
        if c != Compression::None {
            assert_eq!(got, c);
        }
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn sniffing_and_decoding() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(roundtrip(c, &data), data, "{c:?}");
        }
        assert_eq!(roundtrip(Compression::None, b"ab"), b"ab");
        assert_eq!(roundtrip(Compression::None, b""), b"");
    }

    #[test]
    fn multi_member_gzip() {
        let mut all = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            all.extend(e.finish().unwrap());
        }
        let mut out = String::new();
        decompress(Compression::Gzip, &all[..]).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }
}
