//! The `lpmx-job` executable: parse, dispatch, report. The work lives in the library.

mod batch_cmd;
mod cli;
mod commands;
mod run_cmd;

fn main() -> std::process::ExitCode {
    // Inside a container, called as a bridged host command (`/.lpmx/bin/NAME`).
    if let Some(code) = lpmx_job::bridge::client::from_argv0() {
        return std::process::ExitCode::from(code);
    }
    std::process::ExitCode::from(commands::main())
}
