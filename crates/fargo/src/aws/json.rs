//! `ToJson`: SDK values back to JSON (the SDK for Rust has no serde support). The impls per
//! ECS type are generated in `ecs_output`; these are the leaves and containers.

use std::collections::HashMap;

use aws_smithy_types::DateTime;
use serde_json::{Map, Value};

pub trait ToJson {
    fn to_json(&self) -> Value;
}

/// Inserts `v` under `k` unless it is absent or an empty list or map.
pub fn put(m: &mut Map<String, Value>, k: &str, v: impl ToJson) {
    let j = v.to_json();
    let empty = match &j {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        m.insert(k.to_owned(), j);
    }
}

impl ToJson for str {
    fn to_json(&self) -> Value {
        Value::String(self.to_owned())
    }
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

impl ToJson for i32 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for i64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToJson for f64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for DateTime {
    fn to_json(&self) -> Value {
        Value::String(
            self.fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap_or_default(),
        )
    }
}

impl<T: ToJson + ?Sized> ToJson for &T {
    fn to_json(&self) -> Value {
        (**self).to_json()
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

impl<T: ToJson> ToJson for [T] {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        self.as_slice().to_json()
    }
}

impl<V: ToJson> ToJson for HashMap<String, V> {
    fn to_json(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}
