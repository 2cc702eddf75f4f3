//! The `lpmx-job` executable: parse, dispatch, report. The work lives in the library.

mod cli;
mod commands;
mod run_cmd;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(commands::main())
}
