//! Typed reads out of a JSON request body, each failure naming the field path.

use serde_json::{Map, Value};

/// A JSON request body that does not fit the SDK's input types.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", display_path(.path))]
pub struct ConvError {
    pub path: String,
    pub message: String,
}

fn display_path(p: &str) -> &str {
    match p.strip_prefix('.') {
        Some("") | None if p.is_empty() => "(top level)",
        Some(rest) => rest,
        None => p,
    }
}

impl ConvError {
    fn expected(path: &str, what: &str, got: &Value) -> Self {
        let got = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        Self {
            path: path.to_owned(),
            message: format!("expected {what}, found {got}"),
        }
    }

    pub fn unknown(path: &str, key: &str) -> Self {
        Self {
            path: format!("{path}.{key}"),
            message:
                "unknown field (not in the ECS API model, or not supported by this SDK version)"
                    .to_owned(),
        }
    }

    pub fn build(path: &str, e: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}

pub fn str_of<'a>(v: &'a Value, path: &str) -> Result<&'a str, ConvError> {
    v.as_str()
        .ok_or_else(|| ConvError::expected(path, "a string", v))
}

pub fn i32_of(v: &Value, path: &str) -> Result<i32, ConvError> {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| ConvError::expected(path, "a 32-bit integer", v))
}

pub fn i64_of(v: &Value, path: &str) -> Result<i64, ConvError> {
    v.as_i64()
        .ok_or_else(|| ConvError::expected(path, "an integer", v))
}

pub fn f64_of(v: &Value, path: &str) -> Result<f64, ConvError> {
    v.as_f64()
        .ok_or_else(|| ConvError::expected(path, "a number", v))
}

pub fn bool_of(v: &Value, path: &str) -> Result<bool, ConvError> {
    v.as_bool()
        .ok_or_else(|| ConvError::expected(path, "true or false", v))
}

pub fn array_of<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, ConvError> {
    v.as_array()
        .ok_or_else(|| ConvError::expected(path, "an array", v))
}

pub fn object_of<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ConvError> {
    v.as_object()
        .ok_or_else(|| ConvError::expected(path, "an object", v))
}
