//! rimg's own output lines (`outln!`, `errln!`): never a panic on a closed pipe, never an operation cut
//! in half by one.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`rimg image prune | head -1`): Rust
//! ignores SIGPIPE, so the write fails with EPIPE, and the panic ends the process between two steps of
//! whatever it was doing. Restoring SIGPIPE's default disposition for every command would end it just as
//! abruptly (the signal kills at the write), and would also turn writes to rimg's internal pipes (to a
//! container's init, a monitor, a relay) from an error the code handles into sudden death. So the choice
//! is: commands that only read and print (`images`, `ps`, `logs`, `save`, …) get the default SIGPIPE
//! disposition at start (cli/mod.rs) and die at their first write, exactly like `ls | head`; every other
//! command writes its lines through this module, which on a write error stops writing, lets the command
//! finish its work whole, and then [`finish`] ends the process by SIGPIPE, so the shell sees the same
//! status 141 as for `ls | head`.
//!
//! `cli/` and the builder deny `clippy::print_stdout` / `clippy::print_stderr`, so no `println!` creeps back.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Set once a write to stdout failed with EPIPE: later lines are dropped, the exit is by SIGPIPE.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first other write error on stdout (a full disk behind `> file`), reported at exit.
static STDOUT_ERROR: Mutex<Option<String>> = Mutex::new(None);
/// Set once stderr is gone: diagnostics are dropped silently (nobody can read them).
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Print a line on stdout; see the module docs for what happens when nobody reads it.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print a line on stderr without panicking when stderr is closed.
#[macro_export]
macro_rules! errln {
    () => { $crate::output::err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print on stdout without adding a newline (text that already ends in one).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::out(format_args!($($arg)*)) };
}

/// Print on stderr without a newline (prompts).
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::err(format_args!($($arg)*)) };
}

/// Write `args` to stdout and flush (a line is the unit a reader waits for). Errors are remembered, not
/// returned: output is a report about the work, and losing it must not stop the work.
pub fn out(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::SeqCst) {
        return;
    }
    let mut o = io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
        } else if let Ok(mut slot) = STDOUT_ERROR.lock() {
            slot.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Write `args` to stderr; a closed stderr silences later diagnostics.
pub fn err(args: fmt::Arguments<'_>) {
    if STDERR_CLOSED.load(Ordering::SeqCst) {
        return;
    }
    let mut e = io::stderr().lock();
    if e.write_fmt(args).and_then(|()| e.flush()).is_err() {
        STDERR_CLOSED.store(true, Ordering::SeqCst);
    }
}

/// Has stdout's reader gone away?
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

/// Give the default disposition back to SIGPIPE: the next write to a closed pipe kills the process, as
/// it would `ls`. Only for commands that read and print (nothing is left half-done by dying).
pub fn die_on_closed_pipe() {
    // SAFETY: restoring the default disposition of a signal has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The end of a command that ended with `code`: when it succeeded but its output went into a closed pipe,
/// die of SIGPIPE (status 141 in the shell, as any Unix tool whose reader left); when the output could
/// not be written for another reason, say so and fail. Otherwise `code`.
pub fn finish(code: i32) -> i32 {
    let _ = io::stdout().lock().flush();
    if code != 0 {
        return code;
    }
    if stdout_closed() {
        die_on_closed_pipe();
        // SAFETY: raise(2) of a signal whose disposition is now the default (terminate).
        unsafe {
            libc::raise(libc::SIGPIPE);
        }
        // Still alive only if SIGPIPE is blocked: report it the way the shell would have.
        return 128 + libc::SIGPIPE;
    }
    if let Some(e) = STDOUT_ERROR.lock().ok().and_then(|mut s| s.take()) {
        errln!("rimg: writing output: {e}");
        return crate::cli::EXIT_RIMG_ERROR;
    }
    code
}
