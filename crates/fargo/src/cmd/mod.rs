//! One module per subcommand.

pub mod compose;
pub mod count;
pub mod deploy;
pub mod diff;
pub mod lint;
pub mod load;
pub mod render;
pub mod run_task;
pub mod status;
pub mod thumb;
pub mod up;
pub mod watch;
