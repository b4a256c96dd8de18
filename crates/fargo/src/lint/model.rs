//! The ECS API's input model, checked offline: types, required members, unknown members,
//! enum values and min/max bounds, from the shapes vendored out of botocore (see `model/`).
//! The API itself would reject all of these; botocore checks all but enums and bounds.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::{Finding, Severity};

const MODEL: &str = include_str!("model/ecs-input.json");

fn shapes() -> &'static Map<String, Value> {
    static SHAPES: OnceLock<Map<String, Value>> = OnceLock::new();
    SHAPES.get_or_init(|| {
        // The vendored file is part of the build; a broken one is a build defect.
        #[allow(clippy::expect_used)]
        let m: Value = serde_json::from_str(MODEL).expect("vendored ECS model is valid JSON");
        m.get("shapes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    })
}

/// The member names of a structure shape (e.g. `UpdateServiceRequest`).
pub fn members(shape: &str) -> Vec<String> {
    shapes()
        .get(shape)
        .and_then(|s| s.get("members"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Checks `v` against the input shape `shape` (e.g. `RegisterTaskDefinitionRequest`).
pub fn check(shape: &str, v: &Value, out: &mut Vec<Finding>) {
    walk(shape, v, "", out);
}

fn err(out: &mut Vec<Finding>, rule: &'static str, path: &str, message: String) {
    out.push(Finding {
        severity: Severity::Error,
        rule,
        path: if path.is_empty() {
            "(top level)".into()
        } else {
            path.to_owned()
        },
        message,
    });
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn walk(shape_name: &str, v: &Value, path: &str, out: &mut Vec<Finding>) {
    let Some(shape) = shapes().get(shape_name) else {
        return;
    };
    let ty = shape.get("type").and_then(Value::as_str).unwrap_or("");
    let min = shape.get("min").and_then(Value::as_i64);
    let max = shape.get("max").and_then(Value::as_i64);
    match (ty, v) {
        ("structure", Value::Object(obj)) => {
            let members = shape.get("members").and_then(Value::as_object);
            for req in shape
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !obj.contains_key(req) {
                    err(
                        out,
                        "model/required",
                        &join(path, req),
                        "required by the ECS API".into(),
                    );
                }
            }
            for (k, x) in obj {
                let member = members.and_then(|m| m.get(k));
                match member.and_then(|m| m.get("shape")).and_then(Value::as_str) {
                    Some(s) => walk(s, x, &join(path, k), out),
                    None => {
                        let hint = members
                            .and_then(|m| m.keys().find(|n| n.eq_ignore_ascii_case(k)))
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_default();
                        err(
                            out,
                            "model/unknown-field",
                            &join(path, k),
                            format!("not a member of {shape_name}{hint}"),
                        );
                    }
                }
            }
        }
        ("list", Value::Array(items)) => {
            if let Some(m) = min
                && (items.len() as i64) < m
            {
                err(
                    out,
                    "model/min",
                    path,
                    format!("needs at least {m} item(s)"),
                );
            }
            if let Some(member) = shape.pointer("/member/shape").and_then(Value::as_str) {
                for (i, x) in items.iter().enumerate() {
                    walk(member, x, &format!("{path}[{i}]"), out);
                }
            }
        }
        ("map", Value::Object(obj)) => {
            if let Some(value) = shape.pointer("/value/shape").and_then(Value::as_str) {
                for (k, x) in obj {
                    walk(value, x, &join(path, k), out);
                }
            }
        }
        ("string", Value::String(s)) => {
            let templated = s.contains("${");
            if let Some(allowed) = shape.get("enum").and_then(Value::as_array)
                && !templated
                && !allowed.iter().any(|a| a.as_str() == Some(s))
            {
                let list: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                err(
                    out,
                    "model/enum",
                    path,
                    format!("`{s}` is not one of {}", list.join(", ")),
                );
            }
            if let Some(m) = min
                && (s.chars().count() as i64) < m
                && !templated
            {
                err(
                    out,
                    "model/min",
                    path,
                    format!("needs at least {m} character(s)"),
                );
            }
        }
        ("integer" | "long", Value::Number(n)) => match n.as_i64() {
            Some(i) if ty == "integer" && i32::try_from(i).is_err() => {
                err(
                    out,
                    "model/type",
                    path,
                    format!("{i} does not fit a 32-bit integer"),
                );
            }
            Some(i) => {
                if let Some(m) = min
                    && i < m
                {
                    err(
                        out,
                        "model/min",
                        path,
                        format!("{i} is below the minimum {m}"),
                    );
                }
                if let Some(m) = max
                    && i > m
                {
                    err(
                        out,
                        "model/max",
                        path,
                        format!("{i} is above the maximum {m}"),
                    );
                }
            }
            None => err(
                out,
                "model/type",
                path,
                format!("expected an integer, found {n}"),
            ),
        },
        ("boolean", Value::Bool(_)) | ("double", Value::Number(_)) => {}
        (ty, v) => {
            let want = match ty {
                "structure" | "map" => "an object",
                "list" => "an array",
                "string" => "a string",
                "integer" | "long" => "an integer",
                "boolean" => "true or false",
                "double" => "a number",
                _ => "a value of another type",
            };
            err(
                out,
                "model/type",
                path,
                format!("expected {want}, found {}", kind_of(v)),
            );
        }
    }
}
