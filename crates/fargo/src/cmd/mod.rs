//! One module per subcommand.

pub mod up;
pub mod compose;
pub mod deploy;
pub mod diff;
pub mod lint;
pub mod render;
pub mod run_task;
pub mod status;
pub mod thumb;
pub mod watch;
