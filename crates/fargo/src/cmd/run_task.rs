//! `fargo run-task`: Container-on-Demand. Starts one task (the thumbnail job) with container
//! overrides, waits for it to stop and exits with the job container's exit code, not a
//! sidecar's.
//!
//! RunTask can answer with `failures[]` and no task (no Fargate capacity, for one); those are
//! retried with exponential backoff, others reported. Each attempt carries a client token, so
//! the SDK's own retries of a call that timed out never start a second task.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, Failure, KeyValuePair, LaunchType,
    NetworkConfiguration, Task, TaskOverride,
};
use serde_json::Value;

use crate::aws::{AwsArgs, AwsError, Clients, ecs_input};
use crate::cmd::deploy::{registered_taskdef, short};
use crate::cmd::diff::taskdef_changes;
use crate::cmd::render::{VarValue, VarsArgs, render_file};
use crate::lint::{Kind, Options, Severity, lint_value};

#[derive(Debug, clap::Args)]
pub struct RunTaskArgs {
    /// Task definition file to render, lint and register (reused when unchanged).
    #[arg(long, conflicts_with = "task_definition")]
    pub taskdef: Option<PathBuf>,
    /// An already registered task definition: `family` or `family:revision`.
    #[arg(long)]
    pub task_definition: Option<String>,
    /// Cluster; default the CLUSTER value of the environment, else `default`.
    #[arg(long)]
    pub cluster: Option<String>,
    /// The job container: gets the overrides and gives the exit code. Default: the first.
    #[arg(long)]
    pub container: Option<String>,
    /// Environment override for the job container, `KEY=VALUE` (repeatable).
    #[arg(long = "env-var", value_name = "KEY=VALUE")]
    pub env_vars: Vec<String>,
    /// Subnets; default the SUBNETS value of the environment.
    #[arg(long = "subnet")]
    pub subnets: Vec<String>,
    /// Security groups; default the SECURITY_GROUPS value of the environment.
    #[arg(long = "security-group")]
    pub security_groups: Vec<String>,
    /// Idempotency token (up to 64 characters); default one per invocation.
    #[arg(long)]
    pub client_token: Option<String>,
    /// RunTask attempts when it reports capacity failures.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// First backoff between attempts; doubles each time.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// How long to wait for the task to stop.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Interval between DescribeTasks polls.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    #[command(flatten)]
    pub vars: VarsArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Command override for the job container.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// RunTask failure reasons worth retrying: capacity and placement, not bad input.
pub fn retryable(f: &Failure) -> bool {
    let r = f.reason().unwrap_or("").to_ascii_uppercase();
    ["CAPACITY", "RESOURCE:", "AGENT", "THROTTL", "UNAVAILABLE"]
        .iter()
        .any(|k| r.contains(k))
}

fn describe_failures(fs: &[Failure]) -> String {
    fs.iter()
        .map(|f| {
            let mut s = f.reason().unwrap_or("unknown").to_owned();
            if let Some(d) = f.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(a) = f.arn() {
                s.push_str(&format!(" [{a}]"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The job container's exit code from a stopped task.
pub fn exit_code(task: &Task, container: &str) -> anyhow::Result<i32> {
    let names: Vec<&str> = task.containers().iter().filter_map(|c| c.name()).collect();
    let c = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(container))
        .ok_or_else(|| {
            anyhow!(
                "container `{container}` is not in the stopped task (ECS reported: {})",
                names.join(", ")
            )
        })?;
    c.exit_code().ok_or_else(|| {
        anyhow!(
            "container `{container}` has no exit code: {} (task: {})",
            c.reason().unwrap_or("no reason given"),
            task.stopped_reason().unwrap_or("no stop reason")
        )
    })
}

fn default_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("fargo-{}-{nanos:x}", std::process::id())
}

pub async fn run(args: RunTaskArgs) -> anyhow::Result<ExitCode> {
    let clients = Clients::load(&args.aws).await?;
    let code = run_task(&clients, &args).await?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(255),
    ))
}

/// Runs the task and returns the job container's exit code.
pub async fn run_task(clients: &Clients, args: &RunTaskArgs) -> anyhow::Result<i32> {
    let mut vars = args.vars.load()?;
    if vars.get("REGION").is_none() {
        vars.set("REGION", VarValue::One(clients.region.clone()));
    }
    let cluster = args
        .cluster
        .clone()
        .or_else(|| vars.one("CLUSTER").map(str::to_owned))
        .unwrap_or_else(|| "default".into());
    let subnets = if args.subnets.is_empty() {
        vars.list("SUBNETS").unwrap_or_default()
    } else {
        args.subnets.clone()
    };
    let groups = if args.security_groups.is_empty() {
        vars.list("SECURITY_GROUPS").unwrap_or_default()
    } else {
        args.security_groups.clone()
    };
    if subnets.is_empty() {
        bail!(
            "no subnets for the task's awsvpc network: pass --subnet or set SUBNETS in the environment file"
        );
    }
    let mut env = Vec::new();
    for kv in &args.env_vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--env-var {kv}: expected KEY=VALUE"))?;
        env.push(KeyValuePair::builder().name(k).value(v).build());
    }

    // Which task definition, and its containers, before anything starts.
    let (td_arn, containers) = match (&args.taskdef, &args.task_definition) {
        (Some(path), _) => {
            let v = render_file(path, &vars)?;
            let errors: Vec<String> = lint_value(Kind::TaskDefinition, &v, &Options::default())
                .into_iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| f.to_string())
                .collect();
            if !errors.is_empty() {
                bail!(
                    "{}: {} lint error(s), nothing started: {}",
                    path.display(),
                    errors.len(),
                    errors.join("; ")
                );
            }
            let arn = register_if_changed(clients, &v)
                .await
                .with_context(|| path.display().to_string())?;
            (arn, container_names(&v))
        }
        (None, Some(td)) => {
            let v = registered_taskdef(clients, td).await?;
            let arn = v
                .get("taskDefinitionArn")
                .and_then(Value::as_str)
                .unwrap_or(td)
                .to_owned();
            (arn, container_names(&v))
        }
        (None, None) => bail!(
            "give the job's task definition: --taskdef FILE or --task-definition FAMILY[:REVISION]"
        ),
    };
    let job = match &args.container {
        Some(c) if containers.iter().any(|n| n == c) => c.clone(),
        Some(c) => bail!(
            "--container {c}: no such container in {} (containers: {})",
            short(&td_arn),
            containers.join(", ")
        ),
        None => containers
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("{} has no containers", short(&td_arn)))?,
    };

    let mut ov = ContainerOverride::builder()
        .name(&job)
        .set_environment((!env.is_empty()).then_some(env));
    if !args.command.is_empty() {
        ov = ov.set_command(Some(args.command.clone()));
    }
    let overrides = TaskOverride::builder()
        .container_overrides(ov.build())
        .build();
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(subnets))
        .set_security_groups((!groups.is_empty()).then_some(groups))
        .assign_public_ip(AssignPublicIp::from(
            vars.one("ASSIGN_PUBLIC_IP").unwrap_or("DISABLED"),
        ))
        .build()
        .map_err(|e| anyhow!("network configuration: {e}"))?;
    let network = NetworkConfiguration::builder()
        .awsvpc_configuration(vpc)
        .build();

    let token = args.client_token.clone().unwrap_or_else(default_token);
    let mut backoff = args.backoff;
    let mut task = None;
    for attempt in 1..=args.attempts.max(1) {
        // One token per attempt: the SDK's retries of this call reuse it (no duplicate
        // task), while a capacity retry is a new request ECS must not deduplicate.
        let attempt_token = if attempt == 1 {
            token.clone()
        } else {
            format!("{token}-{attempt}")
        };
        let out = clients
            .ecs
            .run_task()
            .cluster(&cluster)
            .task_definition(&td_arn)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("fargo run-task")
            .network_configuration(network.clone())
            .overrides(overrides.clone())
            .client_token(attempt_token.chars().take(64).collect::<String>())
            .send()
            .await
            .map_err(|e| AwsError::call("RunTask", e))?;
        if let Some(t) = out.tasks().first() {
            task = Some(t.clone());
            break;
        }
        let fs = out.failures();
        if fs.is_empty() {
            bail!("RunTask: no task and no failures in the answer");
        }
        if !fs.iter().all(retryable) || attempt == args.attempts.max(1) {
            bail!(
                "RunTask failed after {attempt} attempt(s): {}",
                describe_failures(fs)
            );
        }
        eprintln!(
            "fargo run-task: attempt {attempt}: {}; retrying in {}",
            describe_failures(fs),
            humantime::format_duration(backoff)
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    let task = task.ok_or_else(|| anyhow!("RunTask started no task"))?;
    let arn = task.task_arn().unwrap_or_default().to_owned();
    eprintln!(
        "fargo run-task: started {arn} ({}, job container {job})",
        short(&td_arn)
    );

    let start = Instant::now();
    let mut last = task.last_status().unwrap_or("UNKNOWN").to_owned();
    eprintln!("fargo run-task: [   0s] {last}");
    loop {
        let out = clients
            .ecs
            .describe_tasks()
            .cluster(&cluster)
            .tasks(&arn)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeTasks", e))?;
        let t = out.tasks().first().ok_or_else(|| {
            anyhow!(
                "DescribeTasks: task {arn} not found ({})",
                describe_failures(out.failures())
            )
        })?;
        let status = t.last_status().unwrap_or("UNKNOWN").to_owned();
        if status != last {
            eprintln!(
                "fargo run-task: [{:>4}s] {status}",
                start.elapsed().as_secs()
            );
            last = status.clone();
        }
        if status == "STOPPED" {
            let code = exit_code(t, &job)?;
            eprintln!("fargo run-task: {job} exited with {code}");
            return Ok(code);
        }
        if start.elapsed() >= args.timeout {
            bail!(
                "task {arn} still {status} after {}; it keeps running (stop it with `aws ecs stop-task`)",
                humantime::format_duration(args.timeout)
            );
        }
        tokio::time::sleep(args.poll).await;
    }
}

fn container_names(td: &Value) -> Vec<String> {
    td.get("containerDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Registers `td` unless the family's latest revision is identical; returns the ARN to run.
pub async fn register_if_changed(clients: &Clients, td: &Value) -> anyhow::Result<String> {
    let family = td.get("family").and_then(Value::as_str).unwrap_or("");
    if let Ok(latest) = registered_taskdef(clients, family).await
        && let Some(arn) = latest.get("taskDefinitionArn").and_then(Value::as_str)
        && taskdef_changes(td, &latest).is_empty()
    {
        return Ok(arn.to_owned());
    }
    let out = ecs_input::register_task_definition(clients.ecs.register_task_definition(), td)?
        .send()
        .await
        .map_err(|e| AwsError::call("RegisterTaskDefinition", e))?;
    let arn = out
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .ok_or_else(|| anyhow!("RegisterTaskDefinition: the response has no taskDefinitionArn"))?;
    eprintln!("fargo run-task: registered {}", short(arn));
    Ok(arn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Container;

    #[test]
    fn capacity_failures_are_retryable_bad_input_is_not() {
        let f = |r: &str| Failure::builder().reason(r).build();
        assert!(retryable(&f(
            "Capacity is unavailable at this time. Please try again later or in a different availability zone"
        )));
        assert!(retryable(&f("RESOURCE:MEMORY")));
        assert!(!retryable(&f("MISSING")));
        assert!(!retryable(&f("ATTRIBUTE")));
    }

    #[test]
    fn exit_code_is_the_job_containers() {
        let task = Task::builder()
            .containers(Container::builder().name("logging").exit_code(0).build())
            .containers(Container::builder().name("job").exit_code(3).build())
            .containers(
                Container::builder()
                    .name("crashed")
                    .reason("OutOfMemoryError")
                    .build(),
            )
            .stopped_reason("Essential container in task exited")
            .build();
        assert_eq!(exit_code(&task, "job").unwrap(), 3);
        assert_eq!(exit_code(&task, "logging").unwrap(), 0);
        let e = exit_code(&task, "crashed").unwrap_err().to_string();
        assert!(e.contains("OutOfMemoryError"), "{e}");
        let e = exit_code(&task, "nope").unwrap_err().to_string();
        assert!(e.contains("logging, job, crashed"), "{e}");
    }
}
