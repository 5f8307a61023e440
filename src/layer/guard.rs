//! A passive follower of the tar stream that bounds extension headers.
//!
//! The `tar` crate reads GNU long-name/long-link entries and PAX headers whole into memory, however large
//! their header says they are. A gzip bomb (a few MiB of compressed zeros announcing a 100 GiB long name)
//! would exhaust memory. [`Guard`] watches the same bytes the tar reader consumes, finds each header by
//! following the archive's own framing, and turns an extension entry above the limit into a read error
//! before its body is read.
//!
//! It only ever adds that one error, and only for a header whose checksum is valid, so if it ever lost
//! track of the framing it would just stop protecting, never reject a good archive.

/// What the follower expects next.
enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Collecting GNU sparse extension blocks (each 512 bytes), then `then` bytes of data.
    SparseExt { then: u64 },
    /// Skipping entry data (plus padding).
    Skip(u64),
    /// Collecting a PAX header body to learn a `size` override for the next entry.
    Pax { left: u64, padding: u64 },
    /// End of archive, or lost track: follow no more.
    Done,
}

/// Follows a tar stream chunk by chunk.
pub struct Guard {
    limit: u64,
    state: State,
    block: Vec<u8>,
    pax: Vec<u8>,
    pax_size: Option<u64>,
    /// Set once an oversized extension header is seen.
    pub violation: Option<String>,
}

fn padded(n: u64) -> u64 {
    n.div_ceil(512).saturating_mul(512)
}

fn numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, first byte's top bit is the marker.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field.iter().copied().filter(|&b| b != 0 && b != b' ').collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = numeric(&h[148..156]) else { return false };
    let sum: u64 =
        h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
    sum == want
}

fn pax_size(body: &[u8]) -> Option<u64> {
    let mut rest = body;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return found;
        }
        let rec = &rest[sp + 1..len];
        if let Some(v) = rec.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            found = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        }
        rest = &rest[len..];
    }
    found
}

impl Guard {
    /// Follow a stream, refusing extension headers above `limit` bytes.
    pub fn new(limit: u64) -> Guard {
        Guard {
            limit,
            state: State::Header,
            block: Vec::with_capacity(512),
            pax: Vec::new(),
            pax_size: None,
            violation: None,
        }
    }

    /// Feed the next consumed bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Skip(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Pax { left, padding } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    self.pax.extend_from_slice(&data[..n]);
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.pax_size = pax_size(&self.pax);
                        self.pax.clear();
                        let p = *padding;
                        self.state = if p == 0 { State::Header } else { State::Skip(p) };
                    }
                }
                State::Header | State::SparseExt { .. } => {
                    let n = (512 - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.block.len() == 512 {
                        let block = std::mem::take(&mut self.block);
                        self.block.reserve(512);
                        self.on_block(&block);
                    }
                }
            }
        }
    }

    fn on_block(&mut self, h: &[u8]) {
        if let State::SparseExt { then } = self.state {
            // struct gnu_extended_sparse: isextended at offset 504.
            self.state = if h[504] != 0 { State::SparseExt { then } } else { skip(then) };
            return;
        }
        if h.iter().all(|&b| b == 0) || !checksum_ok(h) {
            self.state = State::Done;
            return;
        }
        let Some(size) = numeric(&h[124..136]) else {
            self.state = State::Done;
            return;
        };
        let kind = h[156];
        if matches!(kind, b'L' | b'K' | b'x' | b'g') {
            if size > self.limit {
                self.violation = Some(format!(
                    "tar extension header ({:?}) of {size} bytes exceeds the limit of {}",
                    kind as char, self.limit
                ));
                self.state = State::Done;
                return;
            }
            self.state = if kind == b'x' {
                State::Pax { left: size, padding: padded(size) - size }
            } else {
                skip(padded(size))
            };
            if kind == b'x' && size == 0 {
                self.state = State::Header;
            }
            return;
        }
        let size = self.pax_size.take().unwrap_or(size);
        let data = padded(size);
        // GNU sparse with more map blocks following (isextended at offset 482 of the GNU header).
        self.state = if kind == b'S' && h[482] != 0 { State::SparseExt { then: data } } else { skip(data) };
    }
}

fn skip(n: u64) -> State {
    if n == 0 {
        State::Header
    } else {
        State::Skip(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1000);
        h.set_mode(0o644);
        // A long name: GNU 'L' entry, well under the limit.
        b.append_data(&mut h, "a/".repeat(80) + "f", &[7u8; 1000][..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "g", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn follows_good_archives_in_any_chunking() {
        let data = sample();
        for chunk in [1, 7, 511, 512, 513, 4096] {
            let mut g = Guard::new(1000);
            for c in data.chunks(chunk) {
                g.feed(c);
            }
            assert!(g.violation.is_none(), "chunk {chunk}: {:?}", g.violation);
            assert!(matches!(g.state, State::Done), "chunk {chunk}: did not reach the end marker");
        }
    }

    #[test]
    fn flags_oversized_long_names() {
        let data = sample();
        let mut g = Guard::new(50);
        g.feed(&data);
        assert!(g.violation.as_deref().unwrap_or("").contains("'L'"), "{:?}", g.violation);
    }

    #[test]
    fn pax_size_records() {
        assert_eq!(pax_size(b"20 size=12345678901\n"), Some(12345678901));
        assert_eq!(pax_size(b"12 path=abc\n"), None);
    }
}
