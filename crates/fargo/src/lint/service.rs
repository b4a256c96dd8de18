//! Rules for a service definition (a `CreateService` request body, `*.service.json`), and the
//! cross-check with its task definition: the load balancer must point at a container port
//! the task really maps.

use serde_json::Value;

use super::{Finding, error, templated, warning};

pub fn check(v: &Value, out: &mut Vec<Finding>) {
    let fargate_cp = v
        .get("capacityProviderStrategy")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|c| {
                matches!(
                    c.get("capacityProvider").and_then(Value::as_str),
                    Some("FARGATE" | "FARGATE_SPOT")
                )
            })
        });
    match v.get("launchType").and_then(Value::as_str) {
        Some("FARGATE") => {}
        None if fargate_cp => {}
        other => error(
            out,
            "service/launch-type",
            "launchType",
            format!(
                "{}; fargo deploys to Fargate: set launchType FARGATE or a FARGATE capacity provider",
                other.map_or("missing".to_owned(), |o| format!("`{o}`"))
            ),
        ),
    }
    let subnets = v.pointer("/networkConfiguration/awsvpcConfiguration/subnets");
    match subnets.and_then(Value::as_array) {
        Some(a) if !a.is_empty() => {}
        _ => error(
            out,
            "service/network",
            "networkConfiguration.awsvpcConfiguration.subnets",
            "a Fargate service needs at least one subnet (awsvpc)",
        ),
    }
    if let Some(n) = v.get("desiredCount").and_then(Value::as_i64)
        && n < 0
    {
        error(
            out,
            "service/desired-count",
            "desiredCount",
            format!("{n}; must be 0 or more"),
        );
    }
    if v.get("taskDefinition").is_some_and(|t| !templated(t)) {
        warning(
            out,
            "service/task-definition",
            "taskDefinition",
            "deploy sets this to the revision it registers; the value here is ignored",
        );
    }
    for (i, lb) in v
        .get("loadBalancers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for f in ["targetGroupArn", "containerName", "containerPort"] {
            if lb.get(f).is_none() {
                error(
                    out,
                    "service/load-balancer",
                    format!("loadBalancers[{i}].{f}"),
                    "an ALB target needs targetGroupArn, containerName and containerPort",
                );
            }
        }
    }
    let dc = v.get("deploymentConfiguration");
    let min = dc
        .and_then(|d| d.get("minimumHealthyPercent"))
        .and_then(Value::as_i64);
    let max = dc
        .and_then(|d| d.get("maximumPercent"))
        .and_then(Value::as_i64);
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        error(
            out,
            "service/deployment",
            "deploymentConfiguration.minimumHealthyPercent",
            format!("{lo}% is above maximumPercent {hi}%; no deployment could proceed"),
        );
    }
}

/// The service's load balancers must name a container of `taskdef` and a port it maps.
pub fn check_against_taskdef(service: &Value, taskdef: &Value, out: &mut Vec<Finding>) {
    let containers = taskdef
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, lb) in service
        .get("loadBalancers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(name) = lb.get("containerName").and_then(Value::as_str) else {
            continue;
        };
        let Some(c) = containers
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        else {
            error(
                out,
                "service/load-balancer-target",
                format!("loadBalancers[{i}].containerName"),
                format!("the task definition has no container `{name}`"),
            );
            continue;
        };
        let port = lb.get("containerPort").and_then(Value::as_i64);
        let mapped = c
            .get("portMappings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|pm| pm.get("containerPort").and_then(Value::as_i64) == port);
        if let Some(port) = port
            && !mapped
        {
            error(
                out,
                "service/load-balancer-target",
                format!("loadBalancers[{i}].containerPort"),
                format!("container `{name}` maps no port {port}; add it to its portMappings"),
            );
        }
    }
}
