//! One module per subcommand.

pub mod up;
pub mod compose;
