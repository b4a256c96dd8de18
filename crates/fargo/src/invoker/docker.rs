//! The job as a Docker container, through the Docker Engine API (`bollard`): create
//! with the job's environment, start, wait, read the log's last line, remove.

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptions,
};
use futures::StreamExt;

use super::{JobSpec, LaunchError, Outcome, last_line};

#[derive(Debug)]
pub struct DockerLauncher {
    docker: Docker,
    /// The fargo image; its entrypoint runs `thumbnail job`.
    pub image: String,
    pub cmd: Vec<String>,
    /// Extra environment, e.g. AWS settings for S3 inputs.
    pub env: Vec<(String, String)>,
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
        })
    }

    pub async fn run(&self, spec: &JobSpec) -> Result<Outcome, LaunchError> {
        // The token names the container, so a second launch for one object is refused
        // by the engine (409) instead of running twice.
        let name = format!("fargo-thumb-{}", &spec.token[..16]);
        let env: Vec<String> = spec
            .env()
            .into_iter()
            .chain(self.env.iter().cloned())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.cmd.clone()),
            env: Some(env),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| LaunchError::Start(format!("docker create {name}: {e}")))?;
        let id = created.id;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| LaunchError::Start(format!("docker start {name}: {e}")))?;
        let mut wait = self
            .docker
            .wait_container(&id, None::<WaitContainerOptions>);
        let exit_code = match wait.next().await {
            Some(Ok(r)) => Some(r.status_code as i32),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                Some(code as i32)
            }
            Some(Err(e)) => {
                return Err(LaunchError::Wait {
                    id,
                    reason: e.to_string(),
                });
            }
            None => None,
        };
        let mut logs = self.docker.logs(
            &id,
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
        let _ = self
            .docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        Ok(Outcome {
            exit_code,
            reason: last_line(&text),
            id: format!("container {name}"),
        })
    }
}
