//! The job as a Docker container, through the Docker Engine API (`bollard`): create
//! with the job's environment and the watched host folders bind-mounted, start, wait,
//! read the log's last lines, remove. One container per video, gone once it has ended.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptions,
};
use fargo_runtime::storage::Location;
use futures::StreamExt;

use super::{JobSpec, LaunchError, Outcome, last_line};

/// Where the watched input folder appears inside a job container (read-only).
pub const INPUT_MOUNT: &str = "/data/in";
/// Where the output folder appears inside a job container.
pub const OUTPUT_MOUNT: &str = "/data/out";
/// Label on every job container, so they can be listed and cleaned up by kind.
pub const JOB_LABEL: &str = "fargo.job";

/// A host folder bind-mounted into every job container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFolder {
    /// Absolute, symlinks resolved: what the engine binds and what job paths are matched on.
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

impl HostFolder {
    /// The container path of `uri` when it is a local path inside this folder.
    fn translate(&self, uri: &str) -> Option<String> {
        let Ok(Location::Local(p)) = Location::parse(uri) else {
            return None;
        };
        // The file may not exist yet (an output), so resolve what does: the folder.
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        let rest = p.strip_prefix(&self.host).ok()?;
        let mut out = self.container.clone();
        for part in rest.components() {
            out.push('/');
            out.push_str(&part.as_os_str().to_string_lossy());
        }
        Some(out)
    }
}

#[derive(Debug)]
pub struct DockerLauncher {
    docker: Docker,
    /// The thumbnail image; its entrypoint is the `thumbnail` binary.
    pub image: String,
    pub cmd: Vec<String>,
    /// Extra environment, e.g. AWS settings for S3 inputs.
    pub env: Vec<(String, String)>,
    /// The watched input folder and the output folder, when they are local.
    pub input: Option<HostFolder>,
    pub output: Option<HostFolder>,
    /// `uid:gid` the job runs as; None keeps the image's non-root user (10001).
    pub user: Option<String>,
    /// What Fargate would give the job: its task definition's cpu and memory.
    pub limits: Limits,
}

/// A job container's CPU and memory caps, in the task definition's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// ECS CPU units: 1024 is one vCPU.
    pub cpu_units: Option<u64>,
    pub memory_mib: Option<u64>,
}

impl Limits {
    /// The task-level `cpu` and `memory` of an ECS task definition (strings, as ECS
    /// takes them); a value that is absent or not a plain number leaves that cap off.
    pub fn of_taskdef(td: &crate::taskdef::TaskDefinition) -> Self {
        let num = |v: &Option<String>| v.as_deref().and_then(|s| s.trim().parse().ok());
        Self {
            cpu_units: num(&td.cpu),
            memory_mib: num(&td.memory),
        }
    }
}

impl DockerLauncher {
    pub fn connect(
        image: String,
        cmd: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<Self, LaunchError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| LaunchError::Start(format!("cannot reach the Docker engine: {e}")))?;
        Ok(Self {
            docker,
            image,
            cmd,
            env,
            input: None,
            output: None,
            user: None,
            limits: Limits::default(),
        })
    }

    /// Bind-mounts the watched folder `input` (read-only) and the output folder `output`
    /// into every job when they are local paths (s3:// and http(s):// need no mount). The
    /// output folder is created if missing, and a job runs as its owner, so thumbnails
    /// belong to whoever owns the folder; a root-owned folder keeps the image's user 10001,
    /// which must then be allowed to write there.
    pub fn with_host_folders(mut self, input: &str, output: &str) -> Result<Self, LaunchError> {
        let local = |uri: &str| match Location::parse(uri) {
            Ok(Location::Local(p)) => Some(p),
            _ => None,
        };
        let resolve = |p: &Path| {
            std::fs::canonicalize(p)
                .map_err(|e| LaunchError::Start(format!("{}: {e}", p.display())))
        };
        if let Some(p) = local(input) {
            self.input = Some(HostFolder {
                host: resolve(&p)?,
                container: INPUT_MOUNT.into(),
                read_only: true,
            });
        }
        if let Some(p) = local(output) {
            std::fs::create_dir_all(&p)
                .map_err(|e| LaunchError::Start(format!("creating {}: {e}", p.display())))?;
            let host = resolve(&p)?;
            self.user = owner(&host);
            self.output = Some(HostFolder {
                host,
                container: OUTPUT_MOUNT.into(),
                read_only: false,
            });
        }
        Ok(self)
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The job's environment contract with host paths replaced by their container paths.
    fn job_env(&self, spec: &JobSpec) -> Vec<String> {
        let mut spec = spec.clone();
        if let Some(p) = self
            .input
            .as_ref()
            .and_then(|m| m.translate(&spec.input_uri))
        {
            spec.input_uri = p;
        }
        if let Some(p) = self
            .output
            .as_ref()
            .and_then(|m| m.translate(&spec.output_dir))
        {
            spec.output_dir = p;
        }
        spec.env()
            .into_iter()
            .chain(self.env.iter().cloned())
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    fn body(&self, spec: &JobSpec) -> ContainerCreateBody {
        let mounts = [&self.input, &self.output]
            .into_iter()
            .flatten()
            .map(|m| Mount {
                target: Some(m.container.clone()),
                source: Some(m.host.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.cmd.clone()),
            env: Some(self.job_env(spec)),
            user: self.user.clone(),
            labels: Some(HashMap::from([
                (JOB_LABEL.to_owned(), "thumbnail".to_owned()),
                ("fargo.input".to_owned(), spec.input_uri.clone()),
            ])),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                // As the job task definition has it (readonlyRootFilesystem).
                readonly_rootfs: Some(true),
                nano_cpus: self
                    .limits
                    .cpu_units
                    .map(|u| (u * 1_000_000_000 / 1024) as i64),
                // Swap equal to memory: no swap, so an oversized frame fails as on Fargate.
                memory: self.limits.memory_mib.map(|m| (m << 20) as i64),
                memory_swap: self.limits.memory_mib.map(|m| (m << 20) as i64),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub async fn run(&self, spec: &JobSpec) -> Result<Outcome, LaunchError> {
        // The token names the container, so a second launch for one object is refused
        // by the engine (409) instead of running twice.
        let name = format!("fargo-thumb-{}", &spec.token[..16]);
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                self.body(spec),
            )
            .await
            .map_err(|e| {
                let hint = if e.to_string().contains("No such image") {
                    " (build it with docker/build-images.sh, or pass --image)"
                } else {
                    ""
                };
                LaunchError::Start(format!(
                    "docker create {name} from {}: {e}{hint}",
                    self.image
                ))
            })?;
        let id = created.id;
        let outcome = self.start_and_wait(&id, &name).await;
        // Whatever happened, the container goes: one per video, none left behind.
        let removed = self
            .docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        if let Err(e) = removed {
            tracing::warn!(container = %name, error = %e, "could not remove the job container");
        }
        outcome
    }

    async fn start_and_wait(&self, id: &str, name: &str) -> Result<Outcome, LaunchError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| LaunchError::Start(format!("docker start {name}: {e}")))?;
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let exit_code = match wait.next().await {
            Some(Ok(r)) => Some(r.status_code as i32),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                Some(code as i32)
            }
            Some(Err(e)) => {
                return Err(LaunchError::Wait {
                    id: id.to_owned(),
                    reason: e.to_string(),
                });
            }
            None => None,
        };
        let mut logs = self.docker.logs(
            id,
            Some(
                LogsOptionsBuilder::new()
                    .stderr(true)
                    .stdout(false)
                    .tail("5")
                    .build(),
            ),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&chunk.to_string());
        }
        Ok(Outcome {
            exit_code,
            reason: last_line(&text),
            id: format!("container {name}"),
        })
    }
}

/// `uid:gid` of `dir`'s owner, unless that is root: a job never runs as root.
fn owner(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok()?;
    (m.uid() != 0).then(|| format!("{}:{}", m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_paths_become_container_paths() {
        let dir = tempfile::tempdir().unwrap();
        let host = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(host.join("sub")).unwrap();
        let m = HostFolder {
            host: host.clone(),
            container: INPUT_MOUNT.into(),
            read_only: true,
        };
        let inside = host.join("sub/clip.mp4");
        assert_eq!(
            m.translate(inside.to_str().unwrap()).as_deref(),
            Some("/data/in/sub/clip.mp4")
        );
        assert_eq!(
            m.translate(host.to_str().unwrap()).as_deref(),
            Some("/data/in")
        );
        assert_eq!(m.translate("/elsewhere/clip.mp4"), None);
        assert_eq!(m.translate("s3://bucket/clip.mp4"), None);
    }

    #[tokio::test]
    async fn the_job_taskdef_sizes_the_container() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../taskdefs/thumbnail-job.json");
        let td = crate::taskdef::TaskDefinition::load(&path).unwrap();
        let limits = Limits::of_taskdef(&td);
        assert_eq!(
            limits.cpu_units,
            td.cpu.as_deref().and_then(|s| s.parse().ok())
        );
        assert!(limits.cpu_units.is_some() && limits.memory_mib.is_some());
        // No engine is contacted until a job runs, so this needs no Docker.
        let launcher = DockerLauncher::connect("img".into(), vec![], vec![])
            .unwrap()
            .with_limits(Limits {
                cpu_units: Some(1024),
                memory_mib: Some(2048),
            });
        let spec = JobSpec {
            input_uri: "/in/a.mp4".into(),
            position: "1".into(),
            output_dir: "/out".into(),
            output_name: "a.png".into(),
            token: "0123456789abcdef0123".into(),
        };
        let host = launcher.body(&spec).host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.memory, Some(2048 << 20));
        assert_eq!(host.memory_swap, host.memory);
        let unlimited = DockerLauncher::connect("img".into(), vec![], vec![]).unwrap();
        let host = unlimited.body(&spec).host_config.unwrap();
        assert_eq!((host.nano_cpus, host.memory), (None, None));
    }
}
