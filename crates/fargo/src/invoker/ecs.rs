//! The job as an ECS `RunTask` on Fargate, the original pattern: container overrides
//! carry the job's environment, the client token makes the launch idempotent per
//! object version, and the task is polled until it stops.

use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, TaskOverride,
};

use super::{JobSpec, LaunchError, Outcome};

#[derive(Debug)]
pub struct EcsLauncher {
    pub client: aws_sdk_ecs::Client,
    pub cluster: String,
    pub task_definition: String,
    /// The job container's name in the task definition.
    pub container: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub poll: Duration,
}

impl EcsLauncher {
    pub async fn run(&self, spec: &JobSpec) -> Result<Outcome, LaunchError> {
        let env = spec
            .env()
            .into_iter()
            .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
            .collect();
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&self.container)
                    .set_environment(Some(env))
                    .build(),
            )
            .build();
        let mut req = self
            .client
            .run_task()
            .cluster(&self.cluster)
            .task_definition(&self.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            // Same object version, same token: ECS starts the task at most once.
            .client_token(&spec.token)
            .started_by("fargo-watch")
            .overrides(overrides);
        if !self.subnets.is_empty() {
            req = req.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(self.subnets.clone()))
                            .set_security_groups(Some(self.security_groups.clone()))
                            .assign_public_ip(AssignPublicIp::Disabled)
                            .build()
                            .map_err(|e| LaunchError::Start(e.to_string()))?,
                    )
                    .build(),
            );
        }
        let out = req.send().await.map_err(|e| {
            LaunchError::Start(format!(
                "RunTask: {}",
                aws_sdk_ecs::error::DisplayErrorContext(&e)
            ))
        })?;
        if let Some(f) = out.failures().first() {
            return Err(LaunchError::Start(format!(
                "RunTask: {} {}",
                f.reason().unwrap_or("failed"),
                f.detail().unwrap_or("")
            )));
        }
        let arn = out
            .tasks()
            .first()
            .and_then(|t| t.task_arn())
            .ok_or_else(|| LaunchError::Start("RunTask returned no task".into()))?
            .to_owned();
        loop {
            let d = self
                .client
                .describe_tasks()
                .cluster(&self.cluster)
                .tasks(&arn)
                .send()
                .await
                .map_err(|e| LaunchError::Wait {
                    id: arn.clone(),
                    reason: aws_sdk_ecs::error::DisplayErrorContext(&e).to_string(),
                })?;
            let Some(task) = d.tasks().first() else {
                return Err(LaunchError::Wait {
                    id: arn,
                    reason: "the task disappeared".into(),
                });
            };
            if task.last_status() == Some("STOPPED") {
                let c = task
                    .containers()
                    .iter()
                    .find(|c| c.name() == Some(self.container.as_str()));
                return Ok(Outcome {
                    exit_code: c.and_then(|c| c.exit_code()),
                    reason: c
                        .and_then(|c| c.reason())
                        .or(task.stopped_reason())
                        .unwrap_or("")
                        .to_owned(),
                    id: arn,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
