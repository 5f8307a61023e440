//! Directory read-ahead for tree walks.
//!
//! A walk (find, du, `ls -R`, a package manager verifying its files) lists a directory and then enters
//! its subdirectories one after the other. On a cold cache every step waits for the disk: the
//! subdirectory's blocks when it is listed, then the inodes of its own subdirectories when the listing
//! resolves them. Kernel overlayfs waits the same way, one read at a time, in the walking process. Here
//! the walk's requests are served by threads pinned to the CPU of the caller, so every read's completion
//! also has to wake a thread on a CPU that may be halted.
//!
//! So when a listing shows subdirectories, the server hands their descriptors to a few read-ahead
//! threads. They read each one's blocks into the page cache (getdents64) and its subdirectories' inodes
//! into the inode cache (fstatat), several reads in flight at once, while the walk is still busy with the
//! ones before. Nothing is kept but what the host's caches keep, and a full queue drops work rather than
//! wait: read-ahead never holds up a request.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use super::sys;

/// Threads reading ahead: enough to keep several reads in flight on a virtual disk.
const THREADS: usize = 3;
/// Directories waiting; more are dropped (a walk that far ahead of the reads gains nothing from them).
const QUEUE: usize = 4096;

/// The read-ahead queue of one mount. Its threads start at the first directory handed to it (so a
/// mount that is never walked starts none, and `prepare` stays thread-free) and are joined when it is
/// dropped with the filesystem.
#[derive(Default)]
pub struct ReadAhead {
    workers: OnceLock<Option<Workers>>,
    counts: Arc<Counts>,
}

struct Workers {
    tx: SyncSender<Arc<OwnedFd>>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Counts {
    read: AtomicU64,
    dropped: AtomicU64,
}

impl ReadAhead {
    /// Read directory `dir` ahead, if there is room in the queue.
    pub fn push(&self, dir: &Arc<OwnedFd>) {
        let Some(w) = self.workers.get_or_init(|| start(&self.counts)) else { return };
        if let Err(TrySendError::Full(_)) = w.tx.try_send(dir.clone()) {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some(Some(w)) = self.workers.take() {
            drop(w.tx);
            for t in w.threads {
                let _ = t.join();
            }
            log::debug!(
                "read-ahead: {} directories read, {} dropped",
                self.counts.read.load(Ordering::Relaxed),
                self.counts.dropped.load(Ordering::Relaxed)
            );
        }
    }
}

/// Start the threads; `None` if none could start (read-ahead is then off for this mount).
fn start(counts: &Arc<Counts>) -> Option<Workers> {
    let (tx, rx) = sync_channel::<Arc<OwnedFd>>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let threads: Vec<JoinHandle<()>> = (0..THREADS)
        .filter_map(|i| {
            let (rx, counts) = (rx.clone(), counts.clone());
            std::thread::Builder::new()
                .name(format!("rimg-readahead-{i}"))
                .spawn(move || work(&rx, &counts))
                .ok()
        })
        .collect();
    (!threads.is_empty()).then_some(Workers { tx, threads })
}

fn work(rx: &Mutex<Receiver<Arc<OwnedFd>>>, counts: &Counts) {
    // a guess about the future gives way to the work of the present: mostly these threads wait for
    // the disk, and when they do want a CPU the server and its callers come first
    // SAFETY: setpriority on the calling thread (PRIO_PROCESS with who = 0 is this thread on Linux).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    loop {
        let dir = {
            let r = rx.lock().unwrap_or_else(|e| e.into_inner());
            match r.recv() {
                Ok(d) => d,
                Err(_) => return, // the mount is gone
            }
        };
        let Ok(entries) = sys::list_dir(dir.as_raw_fd()) else { continue };
        for e in entries {
            if e.dtype == libc::DT_DIR || e.dtype == libc::DT_UNKNOWN {
                let _ = sys::stat_at(dir.as_raw_fd(), &e.name);
            }
        }
        counts.read.fetch_add(1, Ordering::Relaxed);
    }
}
