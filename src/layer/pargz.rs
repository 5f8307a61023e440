//! Parallel, deterministic gzip for layer blobs written by `rimg build`/`commit`.
//!
//! Compression dominates producing a layer (tar framing is nearly free), so it is split across cores
//! the way pigz does it: the stream is cut into fixed 1 MiB blocks, each block is raw-deflated on a
//! worker with the previous block's last 32 KiB as its dictionary and ends with a sync flush, and the
//! pieces are concatenated in order into one ordinary gzip member. The output depends only on the input
//! and the level — not on the number of threads or their timing — so rebuilds keep their digests, and
//! any gzip reader (single-member ones included) decodes it.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown" (as flate2 writes it).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty, fixed-Huffman deflate block: ends the stream after the sync-flushed blocks.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

struct Job {
    index: u64,
    data: Vec<u8>,
    dict: Option<Arc<Vec<u8>>>,
}

type Done = (u64, io::Result<Vec<u8>>);

/// A `Write` that gzips what it is given on worker threads. Call [`ParGzWriter::finish`] to write the
/// trailer and get the inner writer back; dropping it without finishing leaves a truncated stream.
pub struct ParGzWriter<W: Write> {
    out: Option<W>,
    block: Vec<u8>,
    prev_tail: Option<Arc<Vec<u8>>>,
    crc: Crc,
    next_index: u64,
    next_to_write: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    header_written: bool,
}

impl<W: Write> ParGzWriter<W> {
    /// Compress into `out` at `level` with one worker per available core (at most 8).
    pub fn new(out: W, level: Compression) -> Self {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let workers = (0..n)
            .map(|_| {
                let rx = Arc::clone(&jobs_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let r = deflate_block(level, &job.data, job.dict.as_deref().map(|d| d.as_slice()));
                    if tx.send((job.index, r)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        ParGzWriter {
            out: Some(out),
            block: Vec::with_capacity(BLOCK),
            prev_tail: None,
            crc: Crc::new(),
            next_index: 0,
            next_to_write: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 2 * n + 1,
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
            header_written: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out.as_mut().ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    fn submit(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.out()?.write_all(&HEADER)?;
            self.header_written = true;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let tail = Arc::new(data[data.len().saturating_sub(DICT)..].to_vec());
        let dict = self.prev_tail.replace(tail);
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        jobs.send(Job { index: self.next_index, data, dict })
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.next_index += 1;
        self.in_flight += 1;
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Wait for one finished block and write out every block that is now next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (index, r) = self.done.recv().map_err(|_| io::Error::other("gzip worker died"))?;
        self.in_flight -= 1;
        self.pending.insert(index, r?);
        while let Some(bytes) = self.pending.remove(&self.next_to_write) {
            self.out()?.write_all(&bytes)?;
            self.next_to_write += 1;
        }
        Ok(())
    }

    /// Compress what is buffered, wait for all blocks, write the gzip trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() || !self.header_written {
            if self.block.is_empty() {
                // An empty stream still needs a header.
                self.out()?.write_all(&HEADER)?;
                self.header_written = true;
            } else {
                self.submit()?;
            }
        }
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.out()?.write_all(&FINAL_BLOCK)?;
        let (sum, amount) = (self.crc.sum(), self.crc.amount());
        self.out()?.write_all(&sum.to_le_bytes())?;
        self.out()?.write_all(&amount.to_le_bytes())?;
        self.out()?.flush()?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.out.take().ok_or_else(|| io::Error::other("gzip writer already finished"))
    }
}

impl<W: Write> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        // Stop the workers (an unfinished stream is abandoned).
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.block.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are cut at fixed sizes for determinism; flushing only forwards what is complete.
        self.out()?.flush()
    }
}

/// Raw-deflate one block with an optional dictionary, ending in a sync flush (byte-aligned, not final).
fn deflate_block(level: Compression, data: &[u8], dict: Option<&[u8]>) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(4096));
        }
        let before = c.total_in();
        let status = c.compress_vec(input, &mut out, FlushCompress::Sync).map_err(io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        let _: Status = status;
        // Done when all input is in and the flush did not run out of output space.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), Compression::default());
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_single_member_decoders() {
        let mut data = Vec::new();
        let mut x = 1u64;
        while data.len() < 5 * BLOCK + 12345 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Compressible but not trivial: words from a small alphabet.
            data.extend_from_slice(format!("w{} ", (x >> 40) % 5000).as_bytes());
        }
        for input in [&b""[..], &b"x"[..], &data[..BLOCK], &data[..]] {
            let z = gz(input);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&z[..]).read_to_end(&mut out).unwrap();
            assert_eq!(out, input, "len {}", input.len());
            assert_eq!(z, gz(input), "not deterministic");
        }
        // Close to single-threaded compression.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(&data).unwrap();
        let single = e.finish().unwrap().len();
        let par = gz(&data).len();
        assert!(par < single + single / 50, "parallel {par} vs single {single}");
    }
}
