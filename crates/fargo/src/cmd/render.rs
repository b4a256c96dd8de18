//! `fargo render`: fills the `${NAME}` placeholders of a task, service or scaling definition
//! and prints the result.
//!
//! Values come from, highest first: `--set NAME=VALUE`, the environment (`FARGO_VAR_NAME`),
//! and the environment file `taskdefs/envs/<env>.yaml` (a flat map of names to strings or
//! lists). The JSON is parsed before filling, so a value can never break the JSON, and a
//! list value (`SUBNETS: [a, b]`) fills a whole array element (`["${SUBNETS}"]` splices).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::taskdef::fill_placeholders;

/// Prefix of environment variables that set placeholder values.
pub const ENV_PREFIX: &str = "FARGO_VAR_";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    EnvFile { path: String, message: String },
    #[error("--set {0}: expected NAME=VALUE with NAME in upper case (A-Z, 0-9, _)")]
    BadSet(String),
    #[error(
        "{path}: unfilled placeholders: {list} (give them in the env file, FARGO_VAR_<NAME> or --set)"
    )]
    Unfilled { path: String, list: String },
    #[error("{path}: {field}: ${{{name}}} is a list; a list can only fill a whole value")]
    ListInString {
        path: String,
        field: String,
        name: String,
    },
}

/// A placeholder's value: one string, or a list for whole-value placeholders.
#[derive(Debug, Clone, PartialEq)]
pub enum VarValue {
    One(String),
    List(Vec<String>),
}

/// The placeholder values of one environment.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, VarValue>,
}

impl Vars {
    /// Reads an environment file: a flat YAML map of `NAME: value` or `NAME: [values]`.
    pub fn from_env_file(path: &Path) -> Result<Self, RenderError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read {
            path: p.clone(),
            source,
        })?;
        let env_err = |message: String| RenderError::EnvFile {
            path: p.clone(),
            message,
        };
        let map: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&text).map_err(|e| env_err(one_line(&e.to_string())))?;
        let mut values = BTreeMap::new();
        for (name, v) in map {
            if !is_name(&name) {
                return Err(env_err(format!(
                    "{name}: names are upper case (A-Z, 0-9, _), as in ${{{name}}}",
                    name = name
                )));
            }
            let value = match &v {
                serde_yaml::Value::Sequence(items) => VarValue::List(
                    items
                        .iter()
                        .map(|i| {
                            scalar(i).ok_or_else(|| {
                                env_err(format!("{name}: list items must be strings or numbers"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => VarValue::One(scalar(other).ok_or_else(|| {
                    env_err(format!(
                        "{name}: must be a string, a number or a list of strings"
                    ))
                })?),
            };
            values.insert(name, value);
        }
        Ok(Self { values })
    }

    /// Adds `FARGO_VAR_NAME` variables from `env`, overriding the file.
    pub fn overlay_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in env {
            if let Some(name) = k.strip_prefix(ENV_PREFIX)
                && is_name(name)
            {
                self.values.insert(name.to_owned(), parse_value(&v));
            }
        }
    }

    /// Adds `--set NAME=VALUE` flags (`NAME=[a,b]` for a list), overriding everything else.
    pub fn overlay_sets(&mut self, sets: &[String]) -> Result<(), RenderError> {
        for s in sets {
            let (name, v) = s
                .split_once('=')
                .filter(|(n, _)| is_name(n))
                .ok_or_else(|| RenderError::BadSet(s.clone()))?;
            self.values.insert(name.to_owned(), parse_value(v));
        }
        Ok(())
    }

    pub fn set(&mut self, name: &str, value: VarValue) {
        self.values.insert(name.to_owned(), value);
    }

    pub fn get(&self, name: &str) -> Option<&VarValue> {
        self.values.get(name)
    }

    /// The single-string value of `name`, if it has one.
    pub fn one(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(VarValue::One(s)) => Some(s),
            _ => None,
        }
    }

    /// The value of `name` as a list (a single value is a list of one).
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        match self.values.get(name)? {
            VarValue::One(s) => Some(vec![s.clone()]),
            VarValue::List(l) => Some(l.clone()),
        }
    }
}

fn parse_value(v: &str) -> VarValue {
    match v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => VarValue::List(
            inner
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        None => VarValue::One(v.to_owned()),
    }
}

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads and parses a JSON definition file.
pub fn read_json(path: &Path) -> Result<Value, RenderError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read {
        path: p.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| RenderError::Json { path: p, source })
}

/// Reads `path` and fills every placeholder; every unfilled one is reported, with its field.
pub fn render_file(path: &Path, vars: &Vars) -> Result<Value, RenderError> {
    let v = read_json(path)?;
    render_value(&v, vars, &path.display().to_string())
}

/// Fills the placeholders of an already parsed definition; `origin` names it in errors.
pub fn render_value(v: &Value, vars: &Vars, origin: &str) -> Result<Value, RenderError> {
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let out = fill(v, vars, "", &mut missing, origin)?;
    if missing.is_empty() {
        return Ok(out);
    }
    let list = missing
        .iter()
        .map(|(name, fields)| format!("{name} ({})", fields.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    Err(RenderError::Unfilled {
        path: origin.to_owned(),
        list,
    })
}

fn whole_placeholder(s: &str) -> Option<&str> {
    s.strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .filter(|n| is_name(n))
}

fn fill(
    v: &Value,
    vars: &Vars,
    path: &str,
    missing: &mut BTreeMap<String, Vec<String>>,
    origin: &str,
) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(s) => fill_string(s, vars, path, missing, origin)?,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                // A list placeholder as an array element splices its items in.
                if let Value::String(s) = item
                    && let Some(name) = whole_placeholder(s)
                    && let Some(VarValue::List(l)) = vars.get(name)
                {
                    out.extend(l.iter().cloned().map(Value::String));
                    continue;
                }
                out.push(fill(item, vars, &p, missing, origin)?);
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, x) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(k.clone(), fill(x, vars, &p, missing, origin)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn fill_string(
    s: &str,
    vars: &Vars,
    path: &str,
    missing: &mut BTreeMap<String, Vec<String>>,
    origin: &str,
) -> Result<Value, RenderError> {
    if let Some(name) = whole_placeholder(s)
        && let Some(VarValue::List(l)) = vars.get(name)
    {
        return Ok(Value::Array(l.iter().cloned().map(Value::String).collect()));
    }
    let list_used = std::cell::RefCell::new(None);
    let (out, unfilled) = fill_placeholders(s, |name| match vars.get(name) {
        Some(VarValue::One(v)) => Some(v.clone()),
        Some(VarValue::List(_)) => {
            *list_used.borrow_mut() = Some(name.to_owned());
            None
        }
        None => None,
    });
    if let Some(name) = list_used.into_inner() {
        return Err(RenderError::ListInString {
            path: origin.to_owned(),
            field: path.to_owned(),
            name,
        });
    }
    for name in unfilled {
        missing.entry(name).or_default().push(path.to_owned());
    }
    Ok(Value::String(out))
}

/// Where the environment's values come from; shared by render, lint, diff and deploy.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VarsArgs {
    /// Environment name: reads `<envs-dir>/<env>.yaml`.
    #[arg(long, short = 'e')]
    pub env: Option<String>,
    /// Directory of the environment files.
    #[arg(long, default_value = "taskdefs/envs")]
    pub envs_dir: PathBuf,
    /// Placeholder value, `NAME=VALUE` or `NAME=[a,b]` for a list; overrides the env file.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
}

impl VarsArgs {
    /// The values of the chosen environment, with `FARGO_VAR_*` and `--set` on top.
    pub fn load(&self) -> Result<Vars, RenderError> {
        let mut vars = match &self.env {
            Some(env) => Vars::from_env_file(&self.envs_dir.join(format!("{env}.yaml")))?,
            None => Vars::default(),
        };
        vars.overlay_env(std::env::vars());
        vars.overlay_sets(&self.sets)?;
        Ok(vars)
    }
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The definition to render (a task, service or scaling definition).
    pub file: PathBuf,
    #[command(flatten)]
    pub vars: VarsArgs,
    /// Write the result here instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

pub fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let vars = args.vars.load()?;
    let v = render_file(&args.file, &vars)?;
    let text = serde_json::to_string_pretty(&v)? + "\n";
    match &args.output {
        Some(out) => {
            std::fs::write(out, text).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set("TAG", VarValue::One("v1".into()));
        v.set("SUBNETS", VarValue::List(vec!["s-1".into(), "s-2".into()]));
        v
    }

    #[test]
    fn fills_strings_and_splices_lists() {
        let src =
            json!({"image": "repo:${TAG}", "subnets": ["${SUBNETS}", "s-3"], "all": "${SUBNETS}"});
        let out = render_value(&src, &vars(), "f.json").unwrap();
        assert_eq!(
            out,
            json!({"image": "repo:v1", "subnets": ["s-1", "s-2", "s-3"], "all": ["s-1", "s-2"]})
        );
    }

    #[test]
    fn unfilled_placeholders_name_their_fields() {
        let src = json!({"a": [{"b": "${NOPE}"}], "c": "${NOPE}-${ALSO}"});
        let e = render_value(&src, &vars(), "f.json")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "f.json: unfilled placeholders: ALSO (c); NOPE (a[0].b, c) (give them in the env file, FARGO_VAR_<NAME> or --set)"
        );
    }

    #[test]
    fn list_inside_a_string_is_an_error() {
        let src = json!({"x": "a-${SUBNETS}"});
        let e = render_value(&src, &vars(), "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x: ${SUBNETS} is a list"), "{e}");
    }

    #[test]
    fn sets_and_env_override_in_order() {
        let mut v = vars();
        v.overlay_env([
            ("FARGO_VAR_TAG".to_owned(), "v2".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(v.one("TAG"), Some("v2"));
        v.overlay_sets(&["TAG=v3".into(), "L=[a, b]".into()])
            .unwrap();
        assert_eq!(v.one("TAG"), Some("v3"));
        assert_eq!(v.list("L"), Some(vec!["a".into(), "b".into()]));
        assert!(v.overlay_sets(&["lower=x".into()]).is_err());
    }
}
