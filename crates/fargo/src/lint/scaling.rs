//! The scaling definition (`*.scaling.json`): the Application Auto Scaling target of the
//! service's desired count and its target-tracking policies. The resource id is the service's
//! (`service/<cluster>/<name>`), so it is not repeated here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Finding, error};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingDefinition {
    pub min_capacity: i32,
    pub max_capacity: i32,
    #[serde(default)]
    pub target_tracking: Vec<TargetTracking>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetTracking {
    pub policy_name: String,
    /// ECSServiceAverageCPUUtilization, ECSServiceAverageMemoryUtilization or
    /// ALBRequestCountPerTarget (which needs `resourceLabel`).
    pub predefined_metric_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_label: Option<String>,
    pub target_value: f64,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_cooldown: Option<i32>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_cooldown: Option<i32>,
    #[serde(default)]
    pub disable_scale_in: bool,
}

const METRICS: [&str; 3] = [
    "ECSServiceAverageCPUUtilization",
    "ECSServiceAverageMemoryUtilization",
    "ALBRequestCountPerTarget",
];

/// Parses a scaling definition, with the serde error (naming the field) as the message.
pub fn parse(v: &Value) -> Result<ScalingDefinition, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

pub fn check(v: &Value, out: &mut Vec<Finding>) {
    let def = match parse(v) {
        Ok(d) => d,
        Err(e) => {
            error(out, "scaling/schema", "(top level)", e);
            return;
        }
    };
    if def.min_capacity < 0 || def.min_capacity > def.max_capacity {
        error(
            out,
            "scaling/capacity",
            "minCapacity",
            format!(
                "{}..{} is not a range; need 0 <= minCapacity <= maxCapacity",
                def.min_capacity, def.max_capacity
            ),
        );
    }
    for (i, p) in def.target_tracking.iter().enumerate() {
        let here = |f: &str| format!("targetTracking[{i}].{f}");
        if !METRICS.contains(&p.predefined_metric_type.as_str()) {
            error(
                out,
                "scaling/metric",
                here("predefinedMetricType"),
                format!(
                    "`{}` is not one of {}",
                    p.predefined_metric_type,
                    METRICS.join(", ")
                ),
            );
        } else if p.predefined_metric_type == "ALBRequestCountPerTarget"
            && p.resource_label.is_none()
        {
            error(
                out,
                "scaling/metric",
                here("resourceLabel"),
                "ALBRequestCountPerTarget needs the target group's resource label",
            );
        }
        let pct = p.predefined_metric_type.ends_with("Utilization");
        if p.target_value <= 0.0 || (pct && p.target_value > 100.0) {
            error(
                out,
                "scaling/target-value",
                here("targetValue"),
                format!(
                    "{}; a utilization target is above 0 and at most 100 (%)",
                    p.target_value
                ),
            );
        }
        for (f, c) in [
            ("scaleOutCooldown", p.scale_out_cooldown),
            ("scaleInCooldown", p.scale_in_cooldown),
        ] {
            if let Some(c) = c
                && c < 0
            {
                error(
                    out,
                    "scaling/cooldown",
                    here(f),
                    format!("{c} s; must be 0 or more"),
                );
            }
        }
    }
}
