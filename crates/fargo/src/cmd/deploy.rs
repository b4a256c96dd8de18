//! `fargo deploy`: the task definition in `taskdefs/` is the source of truth. Rendered and
//! linted first (nothing is applied if that fails), then: the cluster and the awslogs log
//! groups are created when missing, the task definition is registered (or the current
//! revision reused when identical), the service created or updated, the Application Auto
//! Scaling target and target-tracking policies put, and the rollout awaited with a progress
//! line and a timeout. A failed or timed-out rollout is rolled back to the previous revision.
//!
//! Every error says which call failed and what had already been applied.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_ecs::types::{DeploymentRolloutState, Service};
use serde_json::Value;

use crate::aws::json::ToJson;
use crate::aws::{AwsArgs, AwsError, Clients, ecs_input};
use crate::cmd::render::{VarValue, Vars, VarsArgs, render_file};
use crate::lint::scaling::ScalingDefinition;
use crate::lint::{Finding, Kind, Options, Severity, lint_value, service::check_against_taskdef};

/// The definition files of one service and where they go.
#[derive(Debug, Clone, clap::Args)]
pub struct DefsArgs {
    /// Task definition (RegisterTaskDefinition JSON with ${NAME} placeholders).
    #[arg(long, default_value = "taskdefs/assembly.json")]
    pub taskdef: PathBuf,
    /// Service definition (CreateService JSON).
    #[arg(long, default_value = "taskdefs/assembly.service.json")]
    pub service: PathBuf,
    /// Scaling definition (Application Auto Scaling target and target-tracking policies).
    #[arg(long, default_value = "taskdefs/assembly.scaling.json")]
    pub scaling: PathBuf,
    /// Do not touch Application Auto Scaling.
    #[arg(long)]
    pub no_scaling: bool,
    #[command(flatten)]
    pub vars: VarsArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Rendered, linted definitions, ready to apply.
#[derive(Debug, Clone)]
pub struct Defs {
    pub taskdef: Value,
    pub service: Value,
    pub scaling: Option<ScalingDefinition>,
    pub cluster: String,
    pub service_name: String,
}

impl Defs {
    /// Renders and lints the files; any lint error stops here, before any AWS call.
    pub fn load(args: &DefsArgs, region: &str) -> anyhow::Result<Defs> {
        let mut vars = args.vars.load()?;
        if vars.get("REGION").is_none() {
            vars.set("REGION", VarValue::One(region.to_owned()));
        }
        let taskdef = checked(&args.taskdef, Kind::TaskDefinition, &vars)?;
        let service = checked(&args.service, Kind::Service, &vars)?;
        let mut cross = Vec::new();
        check_against_taskdef(&service, &taskdef, &mut cross);
        fail_on_errors(&args.service.display().to_string(), &cross)?;
        let scaling = if args.no_scaling {
            None
        } else {
            let v = checked(&args.scaling, Kind::Scaling, &vars)?;
            Some(
                crate::lint::scaling::parse(&v)
                    .map_err(|e| anyhow!("{}: {e}", args.scaling.display()))?,
            )
        };
        let cluster = service
            .get("cluster")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let service_name = service
            .get("serviceName")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}: serviceName: required", args.service.display()))?
            .to_owned();
        Ok(Defs {
            taskdef,
            service,
            scaling,
            cluster,
            service_name,
        })
    }

    pub fn family(&self) -> &str {
        self.taskdef
            .get("family")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

fn checked(path: &std::path::Path, kind: Kind, vars: &Vars) -> anyhow::Result<Value> {
    let v = render_file(path, vars)?;
    let findings = lint_value(kind, &v, &Options::default());
    fail_on_errors(&path.display().to_string(), &findings)?;
    Ok(v)
}

fn fail_on_errors(origin: &str, findings: &[Finding]) -> anyhow::Result<()> {
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    bail!(
        "{origin}: {} lint error(s), nothing applied: {}",
        errors.len(),
        errors.join("; ")
    )
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub defs: DefsArgs,
    /// How long to wait for the rollout before rolling back.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Interval between DescribeServices polls while waiting.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Do not wait for the rollout (and so never roll back).
    #[arg(long)]
    pub no_wait: bool,
    /// Do not roll back a failed rollout; leave the service as it is.
    #[arg(long)]
    pub no_rollback: bool,
    /// Failed tasks in the new deployment that count as a failed rollout.
    #[arg(long, default_value_t = 3)]
    pub max_failed_tasks: i32,
    /// Register a new revision even when the current one is identical.
    #[arg(long)]
    pub force_register: bool,
}

/// What has been changed so far, for error messages that say so.
#[derive(Debug, Default)]
struct Applied(Vec<String>);

impl Applied {
    fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("fargo deploy: {what}");
        self.0.push(what);
    }

    fn context(&self) -> String {
        if self.0.is_empty() {
            "nothing was applied".to_owned()
        } else {
            format!("already applied: {}", self.0.join(", "))
        }
    }
}

pub async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let clients = Clients::load(&args.defs.aws).await?;
    let defs = Defs::load(&args.defs, &clients.region)?;
    let outcome = deploy(&clients, &defs, &args).await?;
    println!("{outcome}");
    Ok(ExitCode::SUCCESS)
}

/// The whole deploy; returns the one-line summary.
pub async fn deploy(clients: &Clients, defs: &Defs, args: &DeployArgs) -> anyhow::Result<String> {
    let mut applied = Applied::default();
    let step = |r: Result<(), AwsError>, applied: &Applied| {
        r.map_err(|e| anyhow!("{e} ({})", applied.context()))
    };
    let r = ensure_cluster(clients, &defs.cluster, &mut applied).await;
    step(r, &applied)?;
    let r = ensure_log_groups(clients, &defs.taskdef, &mut applied).await;
    step(r, &applied)?;

    let current = describe_service(clients, &defs.cluster, &defs.service_name)
        .await
        .map_err(|e| anyhow!("{e} ({})", applied.context()))?;
    let previous = current
        .as_ref()
        .and_then(|s| s.task_definition())
        .map(str::to_owned);

    let arn = register(
        clients,
        defs,
        previous.as_deref(),
        args.force_register,
        &mut applied,
    )
    .await
    .map_err(|e| anyhow!("{e:#} ({})", applied.context()))?;

    let managed_count = defs.scaling.is_some();
    match &current {
        Some(_) => update_service(clients, defs, &arn, managed_count, &mut applied).await,
        None => create_service(clients, defs, &arn, &mut applied).await,
    }
    .map_err(|e| anyhow!("{e:#} ({})", applied.context()))?;

    if let Some(scaling) = &defs.scaling {
        apply_scaling(clients, defs, scaling, &mut applied)
            .await
            .map_err(|e| anyhow!("{e:#} ({})", applied.context()))?;
    }

    if args.no_wait {
        return Ok(format!(
            "deployed {} (not waiting for the rollout)",
            short(&arn)
        ));
    }
    match wait(clients, defs, &arn, args).await {
        Ok(msg) => Ok(format!("deployed {}: {msg}", short(&arn))),
        Err(reason) => {
            let rollback = match (&previous, args.no_rollback) {
                (_, true) => "not rolled back (--no-rollback)".to_owned(),
                (None, _) => "no previous revision to roll back to".to_owned(),
                (Some(prev), _) if *prev == arn => {
                    "the failed revision is the previous one; nothing to roll back to".to_owned()
                }
                (Some(prev), _) => match rollback(clients, defs, prev).await {
                    Ok(()) => format!("rolled back to {}", short(prev)),
                    Err(e) => format!("rollback to {} failed too: {e}", short(prev)),
                },
            };
            bail!("deployment of {} failed: {reason}; {rollback}", short(&arn))
        }
    }
}

/// `arn:...:task-definition/fargo-assembly:3` -> `fargo-assembly:3`.
pub fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

async fn ensure_cluster(
    clients: &Clients,
    name: &str,
    applied: &mut Applied,
) -> Result<(), AwsError> {
    let out = clients
        .ecs
        .describe_clusters()
        .clusters(name)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeClusters", e))?;
    let active = out
        .clusters()
        .iter()
        .any(|c| c.cluster_name() == Some(name) && c.status() == Some("ACTIVE"));
    if !active {
        clients
            .ecs
            .create_cluster()
            .cluster_name(name)
            .send()
            .await
            .map_err(|e| AwsError::call("CreateCluster", e))?;
        applied.note(format!("created cluster {name}"));
    }
    Ok(())
}

/// The awslogs groups the task's containers write to.
pub fn log_groups(taskdef: &Value) -> Vec<String> {
    let mut groups: Vec<String> = taskdef
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("logConfiguration"))
        .filter(|lc| lc.get("logDriver").and_then(Value::as_str) == Some("awslogs"))
        .filter_map(|lc| lc.pointer("/options/awslogs-group").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

async fn ensure_log_groups(
    clients: &Clients,
    taskdef: &Value,
    applied: &mut Applied,
) -> Result<(), AwsError> {
    for group in log_groups(taskdef) {
        let out = clients
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&group)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeLogGroups", e))?;
        if out
            .log_groups()
            .iter()
            .any(|g| g.log_group_name() == Some(group.as_str()))
        {
            continue;
        }
        match clients
            .logs
            .create_log_group()
            .log_group_name(&group)
            .send()
            .await
        {
            Ok(_) => applied.note(format!("created log group {group}")),
            // Created concurrently by someone else: what we wanted.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => return Err(AwsError::call("CreateLogGroup", e)),
        }
    }
    Ok(())
}

pub async fn describe_service(
    clients: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<Service>, AwsError> {
    let out = match clients
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(name)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_cluster_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(AwsError::call("DescribeServices", e)),
    };
    Ok(out
        .services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
        .cloned())
}

/// Fetches a registered task definition as the JSON of a `taskdefs/` file.
pub async fn registered_taskdef(clients: &Clients, td: &str) -> Result<Value, AwsError> {
    let out = clients
        .ecs
        .describe_task_definition()
        .task_definition(td)
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeTaskDefinition", e))?;
    let mut v = out.task_definition().map_or(Value::Null, ToJson::to_json);
    if let Value::Object(m) = &mut v {
        crate::aws::json::put(m, "tags", out.tags());
    }
    Ok(v)
}

async fn register(
    clients: &Clients,
    defs: &Defs,
    previous: Option<&str>,
    force: bool,
    applied: &mut Applied,
) -> anyhow::Result<String> {
    if let Some(prev) = previous
        && !force
    {
        let remote = registered_taskdef(clients, prev).await?;
        if crate::cmd::diff::taskdef_changes(&defs.taskdef, &remote).is_empty() {
            eprintln!(
                "fargo deploy: task definition unchanged, reusing {}",
                short(prev)
            );
            return Ok(prev.to_owned());
        }
    }
    let req =
        ecs_input::register_task_definition(clients.ecs.register_task_definition(), &defs.taskdef)
            .context("task definition")?;
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::call("RegisterTaskDefinition", e))?;
    let arn = out
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .ok_or_else(|| anyhow!("RegisterTaskDefinition: the response has no taskDefinitionArn"))?
        .to_owned();
    applied.note(format!("registered {}", short(&arn)));
    Ok(arn)
}

async fn create_service(
    clients: &Clients,
    defs: &Defs,
    arn: &str,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let mut body = defs.service.clone();
    if let Value::Object(m) = &mut body {
        m.remove("taskDefinition");
    }
    let req = ecs_input::create_service(clients.ecs.create_service(), &body)
        .context("service definition")?
        .task_definition(arn);
    req.send()
        .await
        .map_err(|e| AwsError::call("CreateService", e))?;
    applied.note(format!(
        "created service {} on {} with {}",
        defs.service_name,
        defs.cluster,
        short(arn)
    ));
    Ok(())
}

/// The service file's members UpdateService accepts (`serviceName` becomes `service`); the
/// rest (launchType, role, tags, ...) can only be set at creation and are listed back.
pub fn update_body(service: &Value, keep_desired: bool) -> (Value, Vec<String>) {
    let allowed = crate::lint::model::members("UpdateServiceRequest");
    let mut body = serde_json::Map::new();
    let mut dropped = Vec::new();
    for (k, v) in service.as_object().into_iter().flatten() {
        match k.as_str() {
            "serviceName" => {
                body.insert("service".into(), v.clone());
            }
            "taskDefinition" => {}
            "desiredCount" if keep_desired => dropped.push(k.clone()),
            k if allowed.iter().any(|a| a == k) => {
                body.insert(k.to_owned(), v.clone());
            }
            _ => dropped.push(k.clone()),
        }
    }
    (Value::Object(body), dropped)
}

async fn update_service(
    clients: &Clients,
    defs: &Defs,
    arn: &str,
    scaled: bool,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    // Under Application Auto Scaling the desired count is the scaler's; sending the file's
    // would undo a scale-out on every deploy.
    let (body, dropped) = update_body(&defs.service, scaled);
    if !dropped.is_empty() {
        eprintln!(
            "fargo deploy: not sent on update (creation-only or owned by auto scaling): {}",
            dropped.join(", ")
        );
    }
    let req = ecs_input::update_service(clients.ecs.update_service(), &body)
        .context("service definition")?
        .task_definition(arn);
    req.send()
        .await
        .map_err(|e| AwsError::call("UpdateService", e))?;
    applied.note(format!(
        "updated service {} to {}",
        defs.service_name,
        short(arn)
    ));
    Ok(())
}

/// `service/<cluster>/<service>`, the Application Auto Scaling resource id.
pub fn resource_id(defs: &Defs) -> String {
    format!("service/{}/{}", defs.cluster, defs.service_name)
}

async fn apply_scaling(
    clients: &Clients,
    defs: &Defs,
    s: &ScalingDefinition,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let rid = resource_id(defs);
    clients
        .scaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&rid)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(s.min_capacity)
        .max_capacity(s.max_capacity)
        .send()
        .await
        .map_err(|e| AwsError::call("RegisterScalableTarget", e))?;
    applied.note(format!(
        "scalable target {rid}: {}..{} tasks",
        s.min_capacity, s.max_capacity
    ));
    for p in &s.target_tracking {
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::from(p.predefined_metric_type.as_str()))
            .set_resource_label(p.resource_label.clone())
            .build()
            .map_err(|e| anyhow!("scaling policy {}: {e}", p.policy_name))?;
        let conf = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(p.target_value)
            .predefined_metric_specification(metric)
            .set_scale_out_cooldown(p.scale_out_cooldown)
            .set_scale_in_cooldown(p.scale_in_cooldown)
            .disable_scale_in(p.disable_scale_in)
            .build()
            .map_err(|e| anyhow!("scaling policy {}: {e}", p.policy_name))?;
        clients
            .scaling
            .put_scaling_policy()
            .policy_name(&p.policy_name)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&rid)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(conf)
            .send()
            .await
            .map_err(|e| AwsError::call("PutScalingPolicy", e))?;
        applied.note(format!(
            "scaling policy {}: {} at {}",
            p.policy_name, p.predefined_metric_type, p.target_value
        ));
    }
    Ok(())
}

/// Where a rollout stands, from one DescribeServices answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollout {
    Settled(String),
    Failed(String),
    InProgress(String),
}

/// Settled: the service runs `want` (the new revision), one deployment is left, and it is
/// COMPLETED (or, without rollout state, running its desired count). Failed: ECS says FAILED
/// (circuit breaker) or `max_failed` tasks of the new deployment failed to start.
pub fn classify(svc: &Service, want: &str, max_failed: i32) -> Rollout {
    let deployments = svc.deployments();
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    let progress = format!(
        "running {}/{}, pending {}, {} deployment(s){}",
        svc.running_count(),
        svc.desired_count(),
        svc.pending_count(),
        deployments.len(),
        primary
            .and_then(|p| p.rollout_state())
            .map(|r| format!(", rollout {}", r.as_str()))
            .unwrap_or_default()
    );
    if svc.task_definition() != Some(want) {
        return Rollout::Failed(format!(
            "the service runs {} instead (changed by someone else?)",
            svc.task_definition().map(short).unwrap_or("nothing")
        ));
    }
    let Some(p) = primary else {
        return Rollout::InProgress(progress);
    };
    if p.rollout_state() == Some(&DeploymentRolloutState::Failed) {
        return Rollout::Failed(
            p.rollout_state_reason()
                .unwrap_or("rollout FAILED")
                .to_owned(),
        );
    }
    if p.failed_tasks() >= max_failed && max_failed > 0 {
        return Rollout::Failed(format!("{} task(s) failed to start", p.failed_tasks()));
    }
    let done = match p.rollout_state() {
        Some(DeploymentRolloutState::Completed) => true,
        Some(_) => false,
        None => p.running_count() >= p.desired_count(),
    };
    if done && deployments.len() == 1 && svc.running_count() >= svc.desired_count() {
        Rollout::Settled(progress)
    } else {
        Rollout::InProgress(progress)
    }
}

async fn wait(
    clients: &Clients,
    defs: &Defs,
    arn: &str,
    args: &DeployArgs,
) -> Result<String, String> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let svc = describe_service(clients, &defs.cluster, &defs.service_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("service {} disappeared", defs.service_name))?;
        match classify(&svc, arn, args.max_failed_tasks) {
            Rollout::Settled(p) => return Ok(p),
            Rollout::Failed(why) => return Err(why),
            Rollout::InProgress(p) => {
                if p != last {
                    eprintln!("fargo deploy: [{:>4}s] {p}", start.elapsed().as_secs());
                    last = p;
                }
            }
        }
        if start.elapsed() >= args.timeout {
            return Err(format!(
                "not settled after {} ({last})",
                humantime::format_duration(args.timeout)
            ));
        }
        tokio::time::sleep(args.poll).await;
    }
}

async fn rollback(clients: &Clients, defs: &Defs, previous: &str) -> Result<(), AwsError> {
    eprintln!("fargo deploy: rolling back to {}", short(previous));
    clients
        .ecs
        .update_service()
        .cluster(&defs.cluster)
        .service(&defs.service_name)
        .task_definition(previous)
        .send()
        .await
        .map_err(|e| AwsError::call("UpdateService (rollback)", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Deployment;

    fn svc(td: &str, running: i32, desired: i32, deps: Vec<Deployment>) -> Service {
        Service::builder()
            .task_definition(td)
            .running_count(running)
            .desired_count(desired)
            .set_deployments(Some(deps))
            .build()
    }

    fn dep(status: &str, state: Option<DeploymentRolloutState>, failed: i32) -> Deployment {
        Deployment::builder()
            .status(status)
            .set_rollout_state(state)
            .failed_tasks(failed)
            .running_count(2)
            .desired_count(2)
            .build()
    }

    #[test]
    fn rollout_classification() {
        let done = svc(
            "td:2",
            2,
            2,
            vec![dep("PRIMARY", Some(DeploymentRolloutState::Completed), 0)],
        );
        assert!(matches!(classify(&done, "td:2", 3), Rollout::Settled(_)));
        let two = svc(
            "td:2",
            2,
            2,
            vec![
                dep("PRIMARY", Some(DeploymentRolloutState::Completed), 0),
                dep("ACTIVE", None, 0),
            ],
        );
        assert!(matches!(classify(&two, "td:2", 3), Rollout::InProgress(_)));
        let failed = svc(
            "td:2",
            0,
            2,
            vec![dep("PRIMARY", Some(DeploymentRolloutState::Failed), 0)],
        );
        assert!(matches!(classify(&failed, "td:2", 3), Rollout::Failed(_)));
        let crashing = svc(
            "td:2",
            0,
            2,
            vec![dep("PRIMARY", Some(DeploymentRolloutState::InProgress), 3)],
        );
        assert_eq!(
            classify(&crashing, "td:2", 3),
            Rollout::Failed("3 task(s) failed to start".into())
        );
        let other = svc(
            "td:1",
            2,
            2,
            vec![dep("PRIMARY", Some(DeploymentRolloutState::Completed), 0)],
        );
        assert!(matches!(classify(&other, "td:2", 3), Rollout::Failed(_)));
    }

    #[test]
    fn update_body_renames_and_drops_creation_only_fields() {
        let svc = serde_json::json!({"cluster": "c", "serviceName": "s", "desiredCount": 2,
            "launchType": "FARGATE", "tags": [], "taskDefinition": "x"});
        let (body, dropped) = update_body(&svc, true);
        assert_eq!(body, serde_json::json!({"cluster": "c", "service": "s"}));
        assert_eq!(dropped, vec!["desiredCount", "launchType", "tags"]);
        let (body, _) = update_body(&svc, false);
        assert_eq!(body["desiredCount"], 2);
    }
}
