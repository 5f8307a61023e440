//! Typed messages between rimg's own processes. Each channel is a close-on-exec pipe that carries one
//! message type, one JSON document per line; a message that does not parse, or is not the one the
//! receiver expects at that point, is a [`ProtocolError`] (as youki's `Message` channel). End of file is
//! part of the protocol: a closed error pipe means the exec succeeded, a closed lifeline that `rimg run`
//! is gone.
//!
//! The channels of a container start (see `launch`):
//! - monitor → `rimg run`: [`StartReport`];
//! - monitor → init: [`InitPhase`] (build the rootfs; then: you are in the cgroup, go);
//! - `rimg run` → monitor: [`Lifeline`] messages, EOF when `rimg run` dies;
//! - init (or rimg-init, or an exec'd process) → its parent: a [`Failure`] if the start fails before exec.
//!
//! And of `rimg exec`: joiner → `rimg exec`: [`ExecReport`], then the process's [`Failure`], if any.

use super::command::Failure;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// How the start of a container went, from the monitor to `rimg run`.
#[derive(Debug, Serialize, Deserialize)]
pub enum StartReport {
    /// The container's command runs; its PID 1 as seen from the host.
    Started {
        /// Host pid of the container's init.
        init_pid: i32,
    },
    /// The start failed; the record says so too.
    Failed(Failure),
}

/// What the monitor tells the container's init, in this order.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitPhase {
    /// The id maps are written: build the rootfs.
    BuildRootfs,
    /// You are in the container's cgroup: make your cgroup namespace and exec.
    Go,
}

/// What `rimg run` tells its monitor while attached (EOF: `rimg run` died).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifeline {
    /// `rimg run` removes the container's cgroup once the monitor has exited.
    ParentCleansCgroup,
}

/// What the joiner of `rimg exec` reports.
#[derive(Debug, Serialize, Deserialize)]
pub enum ExecReport {
    /// The process is cloned into the container; its host pid.
    Started {
        /// Host pid of the process (a child of `rimg exec`).
        pid: i32,
    },
}

/// A message that broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The channel failed.
    #[error("{channel}: {source}")]
    Io {
        /// Which channel.
        channel: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line that is no message of this channel.
    #[error("{channel}: malformed message: {source}")]
    Malformed {
        /// Which channel.
        channel: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A valid message where another was due.
    #[error("{channel}: expected {expected}, got {got}")]
    Unexpected {
        /// Which channel.
        channel: &'static str,
        /// What the receiver waited for.
        expected: &'static str,
        /// What came.
        got: String,
    },
}

/// The sending end of a channel of `M`s.
#[derive(Debug)]
pub struct Sender<M> {
    file: File,
    channel: &'static str,
    _messages: PhantomData<M>,
}

/// The receiving end of a channel of `M`s.
#[derive(Debug)]
pub struct Receiver<M> {
    reader: BufReader<File>,
    channel: &'static str,
    _messages: PhantomData<M>,
}

/// A new channel named `channel` (the name appears in errors).
pub fn channel<M>(channel: &'static str) -> Result<(Sender<M>, Receiver<M>), ProtocolError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ProtocolError::Io { channel, source: e.into() })?;
    Ok((
        Sender { file: File::from(w), channel, _messages: PhantomData },
        Receiver { reader: BufReader::new(File::from(r)), channel, _messages: PhantomData },
    ))
}

impl<M: Serialize> Sender<M> {
    /// Send one message.
    pub fn send(&mut self, m: &M) -> Result<(), ProtocolError> {
        let channel = self.channel;
        let mut line =
            serde_json::to_vec(m).map_err(|source| ProtocolError::Malformed { channel, source })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| ProtocolError::Io { channel, source })
    }
}

impl<M> Sender<M> {
    /// The pipe, to keep it open across an exec (rimg-init writes its own [`Failure`] to it).
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }

    /// A sender over a pipe given back by [`Sender::into_fd`].
    pub fn from_fd(fd: OwnedFd, channel: &'static str) -> Sender<M> {
        Sender { file: File::from(fd), channel, _messages: PhantomData }
    }
}

impl<M> AsFd for Sender<M> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl<M> AsFd for Receiver<M> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.get_ref().as_fd()
    }
}

impl<M: DeserializeOwned> Receiver<M> {
    /// The next message; `None` at end of file.
    pub fn recv(&mut self) -> Result<Option<M>, ProtocolError> {
        let channel = self.channel;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|source| ProtocolError::Malformed { channel, source }),
            Err(source) => Err(ProtocolError::Io { channel, source }),
        }
    }
}

impl<M: DeserializeOwned + std::fmt::Debug + PartialEq> Receiver<M> {
    /// The next message, which must be `want`; `Ok(false)` at end of file.
    pub fn expect(&mut self, want: M, expected: &'static str) -> Result<bool, ProtocolError> {
        match self.recv()? {
            None => Ok(false),
            Some(m) if m == want => Ok(true),
            Some(m) => {
                Err(ProtocolError::Unexpected { channel: self.channel, expected, got: format!("{m:?}") })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_ends_the_channel() {
        let (mut tx, mut rx) = channel::<StartReport>("report").unwrap();
        tx.send(&StartReport::Started { init_pid: 42 }).unwrap();
        tx.send(&StartReport::Failed(Failure { code: 127, message: "exec: \"x\":\nnot found".into() }))
            .unwrap();
        drop(tx);
        assert!(matches!(rx.recv().unwrap(), Some(StartReport::Started { init_pid: 42 })));
        match rx.recv().unwrap() {
            Some(StartReport::Failed(f)) => {
                assert_eq!((f.code, f.message.as_str()), (127, "exec: \"x\":\nnot found"))
            }
            other => panic!("{other:?}"),
        }
        assert!(rx.recv().unwrap().is_none());
    }

    #[test]
    fn an_unexpected_or_malformed_message_is_an_error() {
        let (mut tx, mut rx) = channel::<InitPhase>("release").unwrap();
        tx.send(&InitPhase::Go).unwrap();
        let e = rx.expect(InitPhase::BuildRootfs, "BuildRootfs").unwrap_err();
        assert!(e.to_string().contains("expected BuildRootfs, got Go"), "{e}");
        tx.file.write_all(b"\"Sideways\"\n").unwrap();
        assert!(matches!(rx.recv(), Err(ProtocolError::Malformed { .. })));
        drop(tx);
        assert!(!rx.expect(InitPhase::Go, "Go").unwrap());
    }
}
