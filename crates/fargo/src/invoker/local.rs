//! The default backend: the job as a child process of this `fargo` binary
//! (`fargo sidecar thumbnail job`), with the job's environment contract.

use std::path::PathBuf;
use std::process::Stdio;

use super::{JobSpec, LaunchError, Outcome, last_line};

#[derive(Debug, Clone)]
pub struct Local {
    /// Program and leading arguments; by default this binary's `sidecar thumbnail job`.
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Local {
    pub fn this_binary() -> Result<Self, LaunchError> {
        let program = std::env::current_exe()
            .map_err(|e| LaunchError::Start(format!("cannot find this binary: {e}")))?;
        Ok(Self {
            program,
            args: vec!["sidecar".into(), "thumbnail".into(), "job".into()],
        })
    }

    pub async fn run(&self, spec: &JobSpec) -> Result<Outcome, LaunchError> {
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .envs(spec.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LaunchError::Start(format!("{}: {e}", self.program.display())))?;
        let id = child.id().map_or_else(String::new, |p| format!("pid {p}"));
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| LaunchError::Wait {
                id: id.clone(),
                reason: e.to_string(),
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = match out.status.code() {
            Some(_) => last_line(&stderr),
            None => format!("killed by a signal ({})", out.status),
        };
        Ok(Outcome {
            exit_code: out.status.code(),
            reason,
            id,
        })
    }
}
