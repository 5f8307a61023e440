//! rimg patch: FUSE over io_uring (kernel >= 6.14, `fuse.enable_uring=1`).
//!
//! Why: with `/dev/fuse` the kernel wakes whichever server thread has waited longest, usually on
//! another CPU than the caller; on a virtual machine whose idle vCPUs halt, that cross-CPU wakeup is
//! most of a request's cost (measured here: 15-80 µs against 6.5 µs with server and caller on one
//! CPU). With io_uring the kernel keeps one queue per CPU and hands a request to the queue of the CPU
//! the caller runs on; each queue is served by a thread pinned to that CPU, so a request and its
//! reply are two context switches on one CPU. That holds only while the caller stays on its CPU
//! when the reply wakes it, which the queue threads' SCHED_IDLE policy provides (see [`guard`]).
//! One entry per queue: a queue thread answers its CPU's requests one after another, as the single
//! thread it is would anyway.
//!
//! Protocol (include/uapi/linux/fuse.h): each queue entry registers a header buffer
//! (`fuse_uring_req_header`) and a payload buffer. A request arrives as the completion of the
//! entry's command: the `fuse_in_header` in the header's first part, the per-op header in its
//! second, the other arguments in the payload. The reply goes back the same way (out header, body in
//! the payload) with a COMMIT_AND_FETCH command, which also arms the entry for the next request.
//! FORGET and INTERRUPT still come through `/dev/fuse`, so the classic readers keep running.
//!
//! Teardown: when the connection ends (umount, abort, the last `/dev/fuse` fd closed) the kernel
//! completes every waiting command with an error, and a commit fails; a queue thread then stops.
//! A queue thread never stops while the connection lives (a queue without an entry would strand
//! the requests of its CPU): a commit refused for any other reason registers a fresh entry.
//!
//! Limit: the kernel hands a request to the queue thread as task work. If the process serving the
//! mount is also the last holder of the mount namespace the mount lives in, its exit unmounts
//! while its own queue thread can no longer run task work, and the unmount waits for ever. Use the
//! transport only where the mount outlives the server process or is unmounted by someone else.
//! Likewise a process that serves a mount and also uses it: killed while one of its own requests
//! is with a queue, the request waits for an answer that no thread can give until the connection
//! is aborted (/sys/fs/fuse/connections/N/abort), and the process cannot finish exiting.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::warn;

use crate::Filesystem;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::read_buf::FuseReadBuf;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `struct fuse_uring_req_header`: in_out[128], op_in[128], fuse_uring_ent_in_out (32 bytes).
const HEADER_LEN: usize = 288;
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;
const FUSE_FORGET: u32 = 2;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;

type Ring = IoUring<squeue::Entry128, cqueue::Entry>;

/// The rings made before the INIT reply (so that a kernel or sandbox without io_uring is found
/// out while the connection can still be told not to use it), one per queue.
pub(crate) struct Rings {
    rings: Vec<Ring>,
    payload_len: usize,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rings({} queues)", self.rings.len())
    }
}

impl Rings {
    /// One ring per possible CPU (the kernel's queue count is `num_possible_cpus()`).
    pub(crate) fn new(payload_len: usize) -> io::Result<Rings> {
        let n = possible_cpus()?;
        let mut rings = Vec::with_capacity(n);
        for _ in 0..n {
            rings.push(
                IoUring::<squeue::Entry128, cqueue::Entry>::builder()
                    .setup_coop_taskrun()
                    .build(4)?,
            );
        }
        Ok(Rings { rings, payload_len })
    }

    /// Start one pinned thread per queue, each serving `fs` through its ring, and the guard that
    /// sets their scheduling policy (see [`guard`]).
    pub(crate) fn spawn<FS: Filesystem>(
        self,
        template: &SessionEventLoop<FS>,
    ) -> io::Result<Vec<std::thread::JoinHandle<io::Result<()>>>> {
        let queues: Arc<Vec<QueueState>> = Arc::new(
            (0..self.rings.len())
                .map(|_| QueueState::default())
                .collect(),
        );
        for q in queues.iter() {
            q.live.store(true, Ordering::Release);
        }
        let mut threads = Vec::new();
        let watched = queues.clone();
        let guard_thread = std::thread::Builder::new()
            .name("fuser-uring-guard".into())
            .spawn(move || {
                guard(&watched);
                Ok(())
            })?;
        let guard_handle = guard_thread.thread().clone();
        threads.push(guard_thread);
        for (qid, ring) in self.rings.into_iter().enumerate() {
            let se = SessionEventLoop {
                thread_name: format!("fuser-uring-{qid}"),
                ch: template.ch.clone(),
                filesystem: template.filesystem.clone(),
                allowed: template.allowed,
                session_owner: template.session_owner,
            };
            let ctx = QueueCtx {
                qid,
                ring,
                dev: template.ch.clone(),
                payload_len: self.payload_len,
                queues: queues.clone(),
                guard: guard_handle.clone(),
            };
            let wake_guard = guard_handle.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fuser-uring-{qid}"))
                .spawn(move || {
                    let r = ctx.serve(&se);
                    // the guard ends with the last queue thread
                    wake_guard.unpark();
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // a queue without a thread would strand its CPU's requests: end them all
                    // (the caller unmounts on this error)
                    for q in queues.iter().skip(qid) {
                        q.live.store(false, Ordering::Release);
                    }
                    guard_handle.unpark();
                    return Err(e);
                }
            }
        }
        Ok(threads)
    }
}

/// What the guard knows of a queue thread.
#[derive(Default)]
struct QueueState {
    /// The thread's id, once it runs.
    tid: AtomicI32,
    /// Bumped when the thread takes a request and when it has answered it.
    seq: AtomicU64,
    /// False once the thread has ended.
    live: AtomicBool,
    /// Set by the guard when it put the thread back to SCHED_OTHER because the queue had been quiet:
    /// the thread returns itself to SCHED_IDLE at its next request (and wakes the guard), so a burst
    /// after a pause is fast from its first request rather than from the guard's next look.
    quiet: AtomicBool,
    /// Set by the thread when it did so; the guard takes note.
    woke: AtomicBool,
}

/// Sets the queue threads' scheduling policy.
///
/// Why SCHED_IDLE: a reply wakes the caller from the queue thread, on the caller's CPU. The
/// scheduler puts a woken task on an idle CPU rather than on a busy one, so with an ordinary queue
/// thread the caller moves to the other CPU at every reply and its next request lands on the other
/// queue, whose thread must be woken there: each round trip wakes an idle vCPU again (measured
/// here: 53 µs per request). A CPU running only SCHED_IDLE tasks counts as idle, so the caller stays
/// and preempts the queue thread at once (8 µs per request).
///
/// Why a guard: a SCHED_IDLE thread gets almost no CPU beside a busy ordinary task, and a queue
/// thread is pinned, so on a loaded CPU its requests would wait for seconds. Every 20 ms the guard
/// looks at each queue thread; one found runnable (`R` in /proc) at two looks in a row without
/// having finished a request is starved and goes back to SCHED_OTHER, for 1 s, doubled (up to 30 s)
/// while starvation keeps coming back. A queue idle for 2 s goes back to SCHED_OTHER too, so that
/// no thread sleeps SCHED_IDLE for long unwatched; the guard then looks only every 250 ms, and the
/// thread itself returns to SCHED_IDLE at its next request and wakes the guard (see
/// [`QueueState::quiet`]).
fn guard(queues: &[QueueState]) {
    const FAST: Duration = Duration::from_millis(20);
    const SLOW: Duration = Duration::from_millis(250);
    const QUIET: Duration = Duration::from_secs(2);
    const MIN_HOLD: Duration = Duration::from_secs(1);
    const MAX_HOLD: Duration = Duration::from_secs(30);
    struct Seen {
        idle_policy: bool,
        seq: u64,
        running: bool,
        last_active: Instant,
        hold: Duration,
        until: Instant,
        demoted_at: Option<Instant>,
        stat: Option<std::fs::File>,
    }
    let start = Instant::now();
    let mut seen: Vec<Seen> = queues
        .iter()
        .map(|_| Seen {
            idle_policy: false,
            seq: 0,
            running: false,
            last_active: start,
            hold: MIN_HOLD,
            until: start,
            demoted_at: None,
            stat: None,
        })
        .collect();
    let mut tick = FAST;
    loop {
        std::thread::park_timeout(tick);
        if queues.iter().all(|q| !q.live.load(Ordering::Acquire)) {
            return;
        }
        let now = Instant::now();
        let mut watch = false;
        for (q, s) in queues.iter().zip(seen.iter_mut()) {
            let tid = q.tid.load(Ordering::Acquire);
            if tid == 0 || !q.live.load(Ordering::Acquire) {
                continue;
            }
            if s.stat.is_none() {
                s.stat = std::fs::File::open(format!("/proc/self/task/{tid}/stat")).ok();
            }
            if q.woke.swap(false, Ordering::AcqRel) {
                s.idle_policy = true;
                s.demoted_at = Some(now);
            }
            let running = s.stat.as_ref().is_some_and(thread_runnable);
            let seq = q.seq.load(Ordering::Acquire);
            let progressed = seq != s.seq;
            if progressed {
                s.last_active = now;
            }
            if s.idle_policy {
                if running && s.running && !progressed {
                    // starved: back to an ordinary share of the CPU
                    s.hold = match s.demoted_at {
                        Some(t) if now.duration_since(t) < s.hold * 2 => (s.hold * 2).min(MAX_HOLD),
                        _ => MIN_HOLD,
                    };
                    s.until = now + s.hold;
                    q.quiet.store(false, Ordering::Release);
                    s.idle_policy = !set_policy(tid, libc::SCHED_OTHER);
                } else if now.duration_since(s.last_active) > QUIET {
                    s.until = now;
                    s.idle_policy = !set_policy(tid, libc::SCHED_OTHER);
                    q.quiet.store(!s.idle_policy, Ordering::Release);
                }
            } else if now >= s.until && now.duration_since(s.last_active) < QUIET {
                q.quiet.store(false, Ordering::Release);
                s.idle_policy = set_policy(tid, libc::SCHED_IDLE);
                if s.idle_policy {
                    s.demoted_at = Some(now);
                }
            }
            s.seq = seq;
            s.running = running;
            watch |= s.idle_policy || now.duration_since(s.last_active) < QUIET;
        }
        tick = if watch { FAST } else { SLOW };
    }
}

/// Whether the thread whose /proc stat file this is is runnable (state `R`).
fn thread_runnable(f: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 512];
    let Ok(n) = f.read_at(&mut b, 0) else {
        return false;
    };
    // "tid (comm) S ...": the state follows the last ')'
    let b = &b[..n];
    match b.iter().rposition(|&c| c == b')') {
        Some(i) => b.get(i + 2) == Some(&b'R'),
        None => false,
    }
}

fn set_policy(tid: i32, policy: i32) -> bool {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on a thread of this process.
    unsafe { libc::sched_setscheduler(tid, policy, &p) == 0 }
}

fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut max = 0usize;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next().unwrap_or(part);
        let n: usize = last
            .parse()
            .map_err(|_| io::Error::other(format!("cannot parse possible CPUs {s:?}")))?;
        max = max.max(n);
    }
    Ok(max + 1)
}

/// One ring entry's buffers. Boxed so that their addresses, which the kernel keeps, never move.
struct Entry {
    header: Box<[u64; HEADER_LEN / 8]>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
    /// Where replies to this entry's requests go; one per entry, reused request after request (a
    /// request is answered and its reply waited for before the entry is committed).
    reply: Arc<RingReply>,
}

impl Entry {
    fn new(payload_len: usize) -> Box<Entry> {
        // moving a Box or a Vec does not move what it points to: the pointers below stay valid
        let mut header = Box::new([0u64; HEADER_LEN / 8]);
        let mut payload = vec![0u8; payload_len];
        let iov = Box::new([
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: HEADER_LEN,
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload_len,
            },
        ]);
        let reply = Arc::new(RingReply {
            header: header.as_mut_ptr().cast(),
            payload: payload.as_mut_ptr(),
            payload_len,
            done: AtomicU8::new(0),
            // entries are made by the queue thread that serves them
            waiter: std::thread::current(),
        });
        Box::new(Entry {
            header,
            payload,
            iov,
            reply,
        })
    }

    fn header_bytes(&self) -> &[u8] {
        // SAFETY: a [u64; 36] is 288 initialized bytes.
        unsafe { std::slice::from_raw_parts(self.header.as_ptr().cast::<u8>(), HEADER_LEN) }
    }
}

/// Where a reply to a request that came through a ring goes: into that entry's buffers, then the
/// queue thread commits it. Replies are normally sent before `dispatch` returns; one sent later
/// (from another thread) is waited for. Thread park/unpark rather than a condition variable: an
/// unpark of a thread that is not parked costs no system call (std's condvar wakes by futex every
/// time, one wasted syscall per request).
pub(crate) struct RingReply {
    header: *mut u8,
    payload: *mut u8,
    payload_len: usize,
    /// 0: no reply yet; 1: the reply is in the entry; 2: it did not fit.
    done: AtomicU8,
    /// The queue thread, which waits for `done`.
    waiter: std::thread::Thread,
}

// SAFETY: the buffers behind the pointers belong to the queue thread, which does not touch them
// between handing a request out and seeing `done` set; only one reply is sent per request.
unsafe impl Send for RingReply {}
unsafe impl Sync for RingReply {}

impl std::fmt::Debug for RingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingReply")
    }
}

impl RingReply {
    /// Copy a reply (out header, then body) into the entry: header into `in_out`, body into the
    /// payload, its length into `fuse_uring_ent_in_out.payload_sz`.
    pub(crate) fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let ok = total >= OUT_HEADER_LEN && total - OUT_HEADER_LEN <= self.payload_len;
        if ok {
            let mut pos = 0usize;
            for b in bufs {
                let mut off = 0;
                while off < b.len() {
                    let n = if pos < OUT_HEADER_LEN {
                        let n = (OUT_HEADER_LEN - pos).min(b.len() - off);
                        // SAFETY: within the 288-byte header buffer.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                b[off..].as_ptr(),
                                self.header.add(pos),
                                n,
                            )
                        };
                        n
                    } else {
                        let n = b.len() - off;
                        // SAFETY: pos - 16 + n <= total - 16 <= payload_len.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                b[off..].as_ptr(),
                                self.payload.add(pos - OUT_HEADER_LEN),
                                n,
                            )
                        };
                        n
                    };
                    pos += n;
                    off += n;
                }
            }
            let sz = (total - OUT_HEADER_LEN) as u32;
            // SAFETY: payload_sz is at ENT_IN_OUT + 16 in the header buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    sz.to_ne_bytes().as_ptr(),
                    self.header.add(ENT_IN_OUT + 16),
                    4,
                )
            };
        }
        self.done.store(if ok { 1 } else { 2 }, Ordering::Release);
        self.waiter.unpark();
        if ok {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "reply of {total} bytes does not fit the ring payload"
            )))
        }
    }

    /// Wait (on the queue thread) for the reply; whether it fitted.
    fn wait(&self) -> bool {
        loop {
            match self.done.swap(0, Ordering::AcqRel) {
                0 => std::thread::park(),
                v => return v == 1,
            }
        }
    }
}

struct QueueCtx {
    qid: usize,
    ring: Ring,
    dev: Channel,
    payload_len: usize,
    queues: Arc<Vec<QueueState>>,
    guard: std::thread::Thread,
}

/// Errors that mean the connection is gone: the queue thread ends.
fn connection_gone(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV | libc::EOPNOTSUPP
    )
}

impl QueueCtx {
    fn push(&mut self, cmd_op: u32, commit_id: u64, entry: &Entry) -> io::Result<()> {
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&(self.qid as u16).to_ne_bytes());
        let sqe = opcode::UringCmd80::new(types::Fd(self.dev.as_fd().as_raw_fd()), cmd_op)
            .cmd(cmd)
            .addr(Some(entry.iov.as_ptr() as u64))
            .build()
            .user_data(self.qid as u64);
        // The uapi wants sqe->len = 2 (the iovec count); io-uring's builder has no setter for it.
        // SAFETY: Entry128 is #[repr(C)] over the kernel's 128-byte SQE; len is the u32 at 24.
        let sqe: squeue::Entry128 = unsafe {
            let mut raw: [u8; 128] = std::mem::transmute(sqe);
            raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
            std::mem::transmute(raw)
        };
        // SAFETY: the entry's buffers outlive the command (they are dropped only after the
        // thread has seen the connection end, or leaked when an entry is replaced).
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        Ok(())
    }

    fn serve<FS: Filesystem>(self, se: &SessionEventLoop<FS>) -> io::Result<()> {
        let queues = self.queues.clone();
        let qid = self.qid;
        // SAFETY: gettid has no preconditions.
        queues[qid]
            .tid
            .store(unsafe { libc::gettid() }, Ordering::Release);
        let r = self.serve_queue(se);
        queues[qid].live.store(false, Ordering::Release);
        r
    }

    fn serve_queue<FS: Filesystem>(mut self, se: &SessionEventLoop<FS>) -> io::Result<()> {
        pin_to_cpu(self.qid);
        let mut entry = Entry::new(self.payload_len);
        let mut buf = FuseReadBuf::new();
        self.push(CMD_REGISTER, 0, &entry)?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
            let Some(cqe) = self.ring.completion().next() else {
                continue;
            };
            let res = cqe.result();
            if res < 0 {
                if connection_gone(-res) {
                    // The kernel writes only into an entry it holds a command of, and it
                    // completed this one with an error: the buffers are free to go.
                    debug!("uring queue {}: connection ended ({res})", self.qid);
                    return Ok(());
                }
                warn!(
                    "uring queue {}: command failed ({}), registering a fresh entry",
                    self.qid,
                    io::Error::from_raw_os_error(-res)
                );
                // the old entry is out of the kernel's hands (its command completed)
                entry = Entry::new(self.payload_len);
                self.push(CMD_REGISTER, 0, &entry)?;
                continue;
            }
            let state = &self.queues[self.qid];
            if state.quiet.load(Ordering::Relaxed) && state.quiet.swap(false, Ordering::AcqRel) {
                // back from a quiet spell: SCHED_IDLE again at once, under the guard's eye
                if set_policy(0, libc::SCHED_IDLE) {
                    state.woke.store(true, Ordering::Release);
                    self.guard.unpark();
                }
            }
            state.seq.fetch_add(1, Ordering::AcqRel);
            let commit_id = self.handle(&mut entry, &mut buf, se);
            state.seq.fetch_add(1, Ordering::AcqRel);
            self.push(CMD_COMMIT_AND_FETCH, commit_id, &entry)?;
        }
    }

    /// Rebuild the request as `/dev/fuse` would have delivered it, dispatch it, and leave the
    /// reply in the entry. Returns the commit id.
    fn handle<FS: Filesystem>(
        &self,
        entry: &mut Entry,
        buf: &mut FuseReadBuf,
        se: &SessionEventLoop<FS>,
    ) -> u64 {
        let h = entry.header_bytes();
        let u32_at = |o: usize| u32::from_ne_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_ne_bytes(b)
        };
        let len = u32_at(0) as usize;
        let unique = u64_at(8);
        let commit_id = u64_at(ENT_IN_OUT + 8);
        let payload_sz = (u32_at(ENT_IN_OUT + 16) as usize).min(entry.payload.len());
        let op_len = len.saturating_sub(IN_HEADER_LEN + payload_sz).min(OP_IN);
        let data = buf.as_mut();
        let total = IN_HEADER_LEN + op_len + payload_sz;
        let reply = &entry.reply;
        if total > data.len() {
            error_reply(reply, unique, libc::EIO);
        } else {
            data[..IN_HEADER_LEN].copy_from_slice(&h[..IN_HEADER_LEN]);
            data[IN_HEADER_LEN..IN_HEADER_LEN + op_len].copy_from_slice(&h[OP_IN..OP_IN + op_len]);
            data[IN_HEADER_LEN + op_len..total].copy_from_slice(&entry.payload[..payload_sz]);
            // The classic length: fuser checks it against the bytes it was given.
            data[..4].copy_from_slice(&(total as u32).to_ne_bytes());
            let opcode = u32::from_ne_bytes([data[4], data[5], data[6], data[7]]);
            if matches!(opcode, FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_DESTROY) {
                // The kernel sends these through /dev/fuse (and DESTROY only for fuseblk); should
                // one come through a ring, it must not leave the entry waiting for a reply.
                error_reply(reply, unique, libc::ENOSYS);
            } else {
                let sender = ChannelSender::ring(&self.dev, reply.clone());
                match RequestWithSender::new(sender, &data[..total]) {
                    Some(req) => req.dispatch(se),
                    None => error_reply(reply, unique, libc::EIO),
                }
            }
        }
        // every path above replied (or handed the reply to whoever answers later): wait for it,
        // which also readies the entry's reply slot for the next request
        if !reply.wait() {
            // The reply did not fit: answer EIO instead.
            error_reply(reply, unique, libc::EIO);
            reply.wait();
        }
        commit_id
    }
}

fn error_reply(reply: &RingReply, unique: u64, errno: i32) {
    let mut h = [0u8; OUT_HEADER_LEN];
    h[..4].copy_from_slice(&(OUT_HEADER_LEN as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    let _ = reply.send(&[IoSlice::new(&h)]);
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        // An offline CPU refuses; the thread then runs anywhere (its queue is idle anyway).
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
