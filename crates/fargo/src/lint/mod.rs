//! `fargo lint`'s checks: offline, before any AWS call. A task definition is checked against
//! the ECS API's input model (`model`) and the Fargate rules the API only reports at deploy or
//! run time (`fargate`); a service definition against the model and the service rules
//! (`service`); a scaling definition against its schema and ranges (`scaling`).
//!
//! Each finding names the field path and the rule, so a person can find and fix it.

pub mod fargate;
pub mod model;
pub mod scaling;
pub mod service;

use std::fmt;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: where (`path`, e.g. `containerDefinitions[1].portMappings[0].hostPort`),
/// which rule (e.g. `fargate/host-port`), and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub rule: &'static str,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}] {}: {}", self.rule, self.path, self.message)
    }
}

/// What a definition file describes, from its name: `*.service.json`, `*.scaling.json`,
/// anything else is a task definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TaskDefinition,
    Service,
    Scaling,
    /// An EventBridge `PutRule` (`*.rule.json`) or `PutTargets` (`*.targets.json`) body.
    Events,
}

impl Kind {
    pub fn of(path: &Path) -> Kind {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".service.json") {
            Kind::Service
        } else if name.ends_with(".scaling.json") {
            Kind::Scaling
        } else if name.ends_with(".rule.json") || name.ends_with(".targets.json") {
            Kind::Events
        } else {
            Kind::TaskDefinition
        }
    }
}

/// Options the checks cannot know from the file itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// Image name fragments of images that have no shell (so `CMD-SHELL` cannot run).
    pub shell_less_images: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            // fargo's own images are distroless (no /bin/sh), like the usual minimal bases.
            shell_less_images: vec![
                "distroless".into(),
                "scratch".into(),
                "/fargo-".into(),
                "chainguard/static".into(),
            ],
        }
    }
}

/// All checks for one parsed definition of `kind`.
pub fn lint_value(kind: Kind, v: &Value, opts: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    match kind {
        Kind::TaskDefinition => {
            model::check("RegisterTaskDefinitionRequest", v, &mut out);
            fargate::check(v, opts, &mut out);
        }
        Kind::Service => {
            model::check("CreateServiceRequest", v, &mut out);
            service::check(v, &mut out);
        }
        Kind::Scaling => scaling::check(v, &mut out),
        Kind::Events => events(v, &mut out),
    }
    out
}

/// True when any finding is an error (the command then exits non-zero).
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

pub(crate) fn error(
    out: &mut Vec<Finding>,
    rule: &'static str,
    path: impl Into<String>,
    message: impl Into<String>,
) {
    out.push(Finding {
        severity: Severity::Error,
        rule,
        path: path.into(),
        message: message.into(),
    });
}

pub(crate) fn warning(
    out: &mut Vec<Finding>,
    rule: &'static str,
    path: impl Into<String>,
    message: impl Into<String>,
) {
    out.push(Finding {
        severity: Severity::Warning,
        rule,
        path: path.into(),
        message: message.into(),
    });
}

/// True for a value still holding a `${NAME}` placeholder (checked after rendering instead).
pub(crate) fn templated(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("${"))
}

/// EventBridge bodies: the shape fargo relies on (no model vendored for EventBridge): a rule
/// has a Name and a pattern or schedule; targets name their rule and each target has an Id
/// and Arn, and an ECS target on Fargate has subnets.
fn events(v: &Value, out: &mut Vec<Finding>) {
    let Some(obj) = v.as_object() else {
        error(out, "events/schema", "(top level)", "expected an object");
        return;
    };
    if obj.contains_key("Targets") {
        if !obj.contains_key("Rule") {
            error(
                out,
                "events/schema",
                "Rule",
                "PutTargets needs the rule's name",
            );
        }
        let targets = obj.get("Targets").and_then(Value::as_array);
        if targets.is_none_or(|t| t.is_empty()) {
            error(out, "events/schema", "Targets", "needs at least one target");
        }
        for (i, t) in targets.into_iter().flatten().enumerate() {
            for f in ["Id", "Arn"] {
                if t.get(f).is_none() {
                    error(
                        out,
                        "events/schema",
                        format!("Targets[{i}].{f}"),
                        "required by PutTargets",
                    );
                }
            }
            if let Some(ecs) = t.get("EcsParameters")
                && ecs.get("LaunchType").and_then(Value::as_str) == Some("FARGATE")
                && ecs
                    .pointer("/NetworkConfiguration/awsvpcConfiguration/Subnets")
                    .and_then(Value::as_array)
                    .is_none_or(|s| s.is_empty())
            {
                error(
                    out,
                    "events/schema",
                    format!(
                        "Targets[{i}].EcsParameters.NetworkConfiguration.awsvpcConfiguration.Subnets"
                    ),
                    "a Fargate task target needs subnets",
                );
            }
        }
    } else {
        if !obj.contains_key("Name") {
            error(out, "events/schema", "Name", "PutRule needs a Name");
        }
        if !obj.contains_key("EventPattern") && !obj.contains_key("ScheduleExpression") {
            error(
                out,
                "events/schema",
                "EventPattern",
                "a rule needs an EventPattern or a ScheduleExpression",
            );
        }
    }
}
