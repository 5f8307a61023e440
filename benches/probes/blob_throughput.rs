//! Throughput probe of the registry client's blob stream, run by hand (it prints a figure and asserts
//! nothing, so it is a bench, not a test); compare with `curl -o /dev/null` of the same blob:
//!
//! `RIMG_PROBE_BLOB=host:port/repo@sha256:… cargo bench --bench blob_throughput`
//!
//! Reads the blob once to the end with no ambient docker credentials (an open registry, e.g. the one
//! `scripts/registry.sh` starts) and the client settings `tests/registry_client.rs` uses.

use anyhow::{bail, Context, Result};
use rimg::reference::Reference;
use rimg::registry::{Client, RegistryConfig};
use std::io::Read;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let Ok(spec) = std::env::var("RIMG_PROBE_BLOB") else {
        eprintln!("set RIMG_PROBE_BLOB=host:port/repo@sha256:...; nothing to do");
        return Ok(());
    };
    let reference = Reference::parse(&spec).with_context(|| format!("RIMG_PROBE_BLOB={spec}"))?;
    let Some(digest) = reference.digest.clone() else {
        bail!("RIMG_PROBE_BLOB={spec} names no blob: it needs @sha256:...");
    };
    let creds = tempfile::tempdir()?;
    let config = RegistryConfig {
        docker_config_dir: Some(creds.path().to_path_buf()),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        max_retries: 3,
        retry_base_delay: Duration::from_millis(20),
        max_retry_delay: Duration::from_secs(3),
        ..RegistryConfig::default()
    };
    let client = Client::new(config)?;
    let start = Instant::now();
    let stream = client.open_blob(&reference.repo_only().with_tag("x")?, &digest, 0)?;
    let mut reader = stream.reader;
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{total} bytes in {secs:.2}s = {:.0} MiB/s", total as f64 / secs / 1048576.0);
    Ok(())
}
