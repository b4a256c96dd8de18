//! `fargo`, the command-line tool: runs the Sidecar-Assembly on this machine (`up`),
//! and hosts every sidecar binary (`sidecar NAME ...`) so one build runs them all.
//! Each subcommand lives in its own module under `cmd/`.

pub mod aws;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod invoker;
pub mod lint;
pub mod taskdef;
