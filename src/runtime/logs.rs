//! Output of detached containers: one JSON object per line (`{"log":…,"stream":"stdout"|"stderr","time":…}`),
//! docker's json-file format, so `rimg logs` can replay stdout and stderr separately and in order.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};

/// One log record.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogLine {
    /// The text, including its trailing newline when it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 timestamp with nanoseconds.
    pub time: String,
}

/// RFC 3339 UTC timestamp for nanoseconds since the epoch.
pub fn rfc3339(nanos: u128) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let sub = (nanos % 1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{sub:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Copy `src` into the shared log as `stream` records until EOF. Lines are split at newlines; a partial line
/// is flushed when the stream ends.
pub fn pump<R: Read>(src: R, stream: &'static str, sink: Arc<Mutex<std::fs::File>>) {
    let mut reader = std::io::BufReader::new(src);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let rec = LogLine {
                    log: String::from_utf8_lossy(&buf).into_owned(),
                    stream: stream.to_string(),
                    time: rfc3339(super::state::now_nanos()),
                };
                if let Ok(mut line) = serde_json::to_vec(&rec) {
                    line.push(b'\n');
                    if let Ok(mut f) = sink.lock() {
                        let _ = f.write_all(&line);
                    }
                }
            }
        }
    }
}

/// Copy `src` to `to` as it comes (no line buffering: a prompt without a newline must show at once) until
/// EOF. When `to` refuses (its reader went away), `src` is dropped, so the writer gets EPIPE or SIGPIPE as
/// it would writing there directly.
pub fn relay<R: Read>(mut src: R, to: impl std::os::fd::AsFd) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if write_all_to(&to, &buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Write all of `data` to `fd` (unbuffered: the relay must not hold output back).
fn write_all_to(fd: impl std::os::fd::AsFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(&fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(super::rfc3339(951_782_400_000_000_123), "2000-02-29T00:00:00.000000123Z");
        assert_eq!(super::rfc3339(1_700_000_000_500_000_000), "2023-11-14T22:13:20.500000000Z");
    }
}
