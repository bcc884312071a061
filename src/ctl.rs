//! `sluicegate ctl`: a client for the admin API (being written).

use std::process::ExitCode;

/// Arguments of `sluicegate ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {}

/// Runs one `ctl` command.
pub fn main(_args: CtlArgs) -> ExitCode {
    eprintln!("sluicegate ctl: not built yet");
    ExitCode::FAILURE
}
