//! `fargo status`: the service's desired/running counts, its deployments, its tasks, the
//! scaling target and policies, and the most recent service events.

use std::process::ExitCode;

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};

use crate::aws::{AwsError, Clients};
use crate::cmd::deploy::{Defs, DefsArgs, describe_service, resource_id, short};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub defs: DefsArgs,
    /// How many recent service events to show.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}

/// The status report as lines; shared with tests.
pub async fn status(clients: &Clients, defs: &Defs, events: usize) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let Some(svc) = describe_service(clients, &defs.cluster, &defs.service_name).await? else {
        lines.push(format!(
            "service {} on {}: not found (run `fargo deploy`)",
            defs.service_name, defs.cluster
        ));
        return Ok(lines);
    };
    lines.push(format!(
        "service {} on {}: {} {}, desired {}, running {}, pending {}",
        defs.service_name,
        defs.cluster,
        svc.status().unwrap_or("?"),
        svc.task_definition().map(short).unwrap_or("?"),
        svc.desired_count(),
        svc.running_count(),
        svc.pending_count()
    ));
    lines.push("deployments:".into());
    for d in svc.deployments() {
        lines.push(format!(
            "  {} {} {} {} running {}/{} pending {} failed {}{}",
            d.status().unwrap_or("?"),
            d.id().unwrap_or("?"),
            d.task_definition().map(short).unwrap_or("?"),
            d.rollout_state().map(|r| r.as_str()).unwrap_or("-"),
            d.running_count(),
            d.desired_count(),
            d.pending_count(),
            d.failed_tasks(),
            d.rollout_state_reason()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }

    let arns = clients
        .ecs
        .list_tasks()
        .cluster(&defs.cluster)
        .service_name(&defs.service_name)
        .send()
        .await
        .map_err(|e| AwsError::call("ListTasks", e))?
        .task_arns()
        .to_vec();
    lines.push(format!("tasks: {}", arns.len()));
    if !arns.is_empty() {
        let out = clients
            .ecs
            .describe_tasks()
            .cluster(&defs.cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeTasks", e))?;
        for t in out.tasks() {
            lines.push(format!(
                "  {} {} {} {}",
                t.task_arn().map(short).unwrap_or("?"),
                t.last_status().unwrap_or("?"),
                t.health_status().map(|h| h.as_str()).unwrap_or("-"),
                t.task_definition_arn().map(short).unwrap_or("?")
            ));
        }
    }

    let rid = resource_id(defs);
    let targets = clients
        .scaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(&rid)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeScalableTargets", e))?;
    match targets.scalable_targets().first() {
        Some(t) => {
            let policies = clients
                .scaling
                .describe_scaling_policies()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&rid)
                .send()
                .await
                .map_err(|e| AwsError::call("DescribeScalingPolicies", e))?;
            let names: Vec<String> = policies
                .scaling_policies()
                .iter()
                .map(|p| {
                    let conf = p.target_tracking_scaling_policy_configuration();
                    format!(
                        "{} ({} at {})",
                        p.policy_name(),
                        conf.and_then(|c| c.predefined_metric_specification())
                            .map(|m| m.predefined_metric_type().as_str())
                            .unwrap_or("custom metric"),
                        conf.map(|c| c.target_value()).unwrap_or_default()
                    )
                })
                .collect();
            lines.push(format!(
                "scaling: {}..{} tasks; policies: {}",
                t.min_capacity(),
                t.max_capacity(),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ));
        }
        None => lines.push("scaling: no scalable target".into()),
    }

    let evs = svc.events();
    lines.push(format!(
        "events (latest {} of {}):",
        events.min(evs.len()),
        evs.len()
    ));
    for e in evs.iter().take(events) {
        lines.push(format!(
            "  {} {}",
            e.created_at().map(|t| t.to_string()).unwrap_or_default(),
            e.message().unwrap_or("")
        ));
    }
    Ok(lines)
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let clients = Clients::load(&args.defs.aws).await?;
    let defs = Defs::load(&args.defs, &clients.region)?;
    for line in status(&clients, &defs, args.events).await? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
