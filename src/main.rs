//! The `lpmx-job` executable: parse, dispatch, report. The work lives in the library.
//!
//! `main` is the C one (`no_main`): every task of a job step starts this executable, and
//! std's own start-up spends about 20 µs on a guard page for the main thread, finding the
//! stack by reading and parsing /proc/self/maps, plus a signal stack and two handlers. What
//! is lost is the "stack overflow" message before the SIGSEGV, in a program that recurses
//! nowhere deep. The rest of what std's start-up does is done here; arguments and the
//! environment come from std as usual (glibc hands them to it before `main`).

// Unit tests of the executable's modules keep the test harness's own main.
#![cfg_attr(not(test), no_main)]

mod cli;

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    std_start();
    // std::process::exit flushes stdout, as returning from a Rust main would.
    std::process::exit(i32::from(lpmx_main()))
}

/// Under `cargo test` the harness brings its own main; this one only keeps what it calls
/// alive for the compiler's dead-code check.
#[cfg(test)]
fn main() {
    std::process::exit(i32::from(lpmx_main()))
}

fn lpmx_main() -> u8 {
    // Inside a container, called as a bridged host command (`/.lpmx/bin/NAME`).
    match lpmx_job::container::bridge::client::from_argv0() {
        Some(code) => code,
        None => cli::dispatch::main(),
    }
}

#[cfg(not(test))]
/// What std does before a Rust `main` that matters here: fds 0-2 open (else the next file
/// opened would become stdout), and SIGPIPE ignored (a closed pipe is an error to report,
/// not a silent death; `run` restores it for the command).
fn std_start() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes only the array it is given, of the length given.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled > 0 {
        for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
            // SAFETY: opening /dev/null takes the lowest free fd, which is this closed one.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if fd != p.fd {
                // SAFETY: aborting is always sound; there is no safe way on without fds 0-2.
                unsafe { libc::abort() };
            }
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety requirement.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}
