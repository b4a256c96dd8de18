//! Who starts the thumbnail job: one launch per new video, through a local process
//! (the default), a Docker container (Docker Engine API) or an ECS `RunTask`.
//!
//! Every backend gets the same [`JobSpec`] and hands the job the original environment
//! contract (`INPUT_VIDEO_FILE_URL`, `POSITION_TIME_DURATION`, `OUTPUT_S3_PATH`,
//! `OUTPUT_THUMBS_FILE_NAME`), and reports how the job ended as an [`Outcome`].

pub mod docker;
pub mod ecs;
pub mod local;

/// One job: a video and where its thumbnail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub input_uri: String,
    pub position: String,
    /// Folder or prefix of the output (`OUTPUT_S3_PATH`).
    pub output_dir: String,
    /// File name inside it (`OUTPUT_THUMBS_FILE_NAME`).
    pub output_name: String,
    /// Stable per object version (key and ETag): the idempotency token of the launch.
    pub token: String,
}

impl JobSpec {
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("INPUT_VIDEO_FILE_URL".into(), self.input_uri.clone()),
            ("POSITION_TIME_DURATION".into(), self.position.clone()),
            ("OUTPUT_S3_PATH".into(), self.output_dir.clone()),
            ("OUTPUT_THUMBS_FILE_NAME".into(), self.output_name.clone()),
        ]
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The job's exit code; None when it never ran or was killed by a signal.
    pub exit_code: Option<i32>,
    /// Last line the job wrote to stderr, or why it stopped.
    pub reason: String,
    /// Where it ran: a pid, a container id, a task ARN.
    pub id: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start the job: {0}")]
    Start(String),
    #[error("lost track of the job {id}: {reason}")]
    Wait { id: String, reason: String },
}

/// A 32-hex-digit token from the object's identity; same object version, same token.
pub fn token(key: &str, etag: &str) -> String {
    // FNV-1a, twice with different offsets: stable across builds, no dependency.
    let h = |seed: u64| {
        let mut x = seed;
        for b in key.bytes().chain([0]).chain(etag.bytes()) {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x100_0000_01b3);
        }
        x
    };
    format!(
        "{:016x}{:016x}",
        h(0xcbf2_9ce4_8422_2325),
        h(0x8422_2325_cbf2_9ce4)
    )
}

/// The backends, chosen on the command line.
#[derive(Debug)]
pub enum Launcher {
    Local(local::Local),
    Docker(docker::DockerLauncher),
    Ecs(ecs::EcsLauncher),
}

impl Launcher {
    /// Starts the job and waits for it to end.
    pub async fn run(&self, spec: &JobSpec) -> Result<Outcome, LaunchError> {
        match self {
            Self::Local(l) => l.run(spec).await,
            Self::Docker(d) => d.run(spec).await,
            Self::Ecs(e) => e.run(spec).await,
        }
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_stable_and_distinct() {
        assert_eq!(token("a/b.mp4", "\"e1\""), token("a/b.mp4", "\"e1\""));
        assert_ne!(token("a/b.mp4", "\"e1\""), token("a/b.mp4", "\"e2\""));
        assert_eq!(token("k", "e").len(), 32);
    }
}
