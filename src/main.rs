//! The `lpmx-job` executable: parse, dispatch, report. The work lives in the library.

mod cli;
mod commands;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(commands::main())
}
