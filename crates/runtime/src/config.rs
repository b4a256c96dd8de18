//! Configuration: one YAML or TOML file plus `FARGO_*` environment overrides.
//!
//! ECS hands a container its settings through the task definition's `environment`,
//! so every key can be set as `FARGO_SECTION__KEY` (double underscore nests). Unknown
//! keys are errors, and every error names the key and where it came from, because a
//! typo that silently falls back to a default is the worst kind of misconfiguration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::telemetry::TelemetryConfig;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "FARGO_CONFIG";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "FARGO_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: not found")]
    Missing { path: PathBuf },
    #[error("config file {path}: unsupported extension (use .yaml, .yml or .toml)")]
    Extension { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Settings every sidecar's gRPC server shares.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind. Sidecars listen on localhost; only the auth-proxy is public.
    pub listen: SocketAddr,
    /// Upper bound for a unary call (a smaller client `grpc-timeout` wins).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Calls handled at once (streams included, health and reflection exempt); 0 means
    /// 256, a memory bound for I/O-bound services. CPU-bound ones set their core count.
    pub concurrency_limit: usize,
    /// Refuse rather than queue past the limit, with RESOURCE_EXHAUSTED.
    pub shed_load: bool,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// How long in-flight calls may run after SIGTERM; keep below the task's stopTimeout.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Time between reporting NOT_SERVING and refusing new calls, so load balancers notice.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 0,
            shed_load: false,
            max_message_bytes: 16 * 1024 * 1024,
            grace_period: Duration::from_secs(20),
            drain_delay: Duration::ZERO,
        }
    }
}

impl ServerConfig {
    /// The concurrency limit with 0 resolved to the default.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency_limit > 0 {
            self.concurrency_limit
        } else {
            256
        }
    }
}

/// What the runtime needs to know about a sidecar's configuration type.
pub trait Sidecar: DeserializeOwned + Serialize + Default {
    /// Binary and service name, used in logs, traces and error messages.
    const NAME: &'static str;
    fn server(&self) -> &ServerConfig;
    fn telemetry(&self) -> &TelemetryConfig;
}

/// Loads `T` from defaults, then `path` (if any), then `FARGO_*` variables from `env`.
///
/// `env` is passed in rather than read here so `fargo up` and tests can give each
/// sidecar the environment its task-definition container would have.
pub fn load<T, I>(path: Option<&Path>, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (String, String)>,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = path {
        if !path.is_file() {
            return Err(ConfigError::Missing {
                path: path.to_owned(),
            });
        }
        figment = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => figment.merge(Yaml::file_exact(path)),
            Some("toml") => figment.merge(Toml::file_exact(path)),
            _ => {
                return Err(ConfigError::Extension {
                    path: path.to_owned(),
                });
            }
        };
    }
    let vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIG_ENV)
        .collect();
    if !vars.is_empty() {
        let env = Env::prefixed(ENV_PREFIX).split("__");
        figment = figment.merge(EnvSnapshot { env, vars });
    }
    figment
        .extract()
        .map_err(|e| ConfigError::Invalid(describe(e)))
}

/// Figment's `Env` reads the process environment; this feeds it a captured map instead.
struct EnvSnapshot {
    env: Env,
    vars: Vec<(String, String)>,
}

impl figment::Provider for EnvSnapshot {
    fn metadata(&self) -> figment::Metadata {
        self.env.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (k, v) in &self.vars {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.clone().into());
            let nested = figment::util::nest(&key, value);
            if let figment::value::Value::Dict(_, d) = nested {
                dict = merge_dicts(dict, d);
            }
        }
        Ok(self.env.profile.collect(dict))
    }
}

fn merge_dicts(mut a: figment::value::Dict, b: figment::value::Dict) -> figment::value::Dict {
    for (k, v) in b {
        match (a.remove(&k), v) {
            (Some(figment::value::Value::Dict(t, x)), figment::value::Value::Dict(_, y)) => {
                a.insert(k, figment::value::Value::Dict(t, merge_dicts(x, y)));
            }
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
}

/// One line per problem, each naming the key and its source (file or variable).
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let mut s = String::new();
            if !e.path.is_empty() {
                s.push_str(&format!("key `{}`: ", e.path.join(".")));
            }
            s.push_str(&e.kind.to_string());
            if let Some(source) = e.metadata.as_ref().map(|m| match &m.source {
                Some(src) => format!("{} {src}", m.name),
                None => m.name.to_string(),
            }) {
                let var = if source.contains("environment") && !e.path.is_empty() {
                    format!(
                        " ({}{})",
                        ENV_PREFIX,
                        e.path.join("__").to_ascii_uppercase()
                    )
                } else {
                    String::new()
                };
                s.push_str(&format!(" (from {source}{var})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        server: ServerConfig,
        telemetry: TelemetryConfig,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_nests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "server:\n  listen: 127.0.0.1:7000\n  request_timeout: 5s\n",
        )
        .unwrap();
        let cfg: Cfg = load(
            Some(&path),
            env(&[("FARGO_SERVER__LISTEN", "127.0.0.1:7001"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 7001);
        assert_eq!(cfg.server.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_key_in_file_is_named_with_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server:\n  lissten: 127.0.0.1:7000\n").unwrap();
        let err = load::<Cfg, _>(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lissten"), "{err}");
        assert!(err.contains("c.yaml"), "{err}");
    }

    #[test]
    fn wrong_type_from_env_names_variable() {
        let err = load::<Cfg, _>(None, env(&[("FARGO_SERVER__CONCURRENCY_LIMIT", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.concurrency_limit"), "{err}");
        assert!(err.contains("FARGO_SERVER__CONCURRENCY_LIMIT"), "{err}");
    }

    #[test]
    fn toml_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nshed_load = true\n").unwrap();
        let cfg: Cfg = load(Some(&path), env(&[])).unwrap();
        assert!(cfg.server.shed_load);
        let missing = dir.path().join("nope.yaml");
        let err = load::<Cfg, _>(Some(&missing), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.yaml") && err.contains("not found"),
            "{err}"
        );
    }
}
