//! `fargo compose`: renders `docker-compose.yml` from the task definitions, so what
//! `docker compose up` runs on a laptop is the assembly ECS runs, field for field.
//!
//! The mapping, ECS to Compose:
//! - awsvpc: the first container without dependencies (the root every sidecar waits for)
//!   owns the network namespace and publishes every `portMappings` port on 127.0.0.1; the
//!   others join it with `network_mode: service:<owner>` and reach each other on localhost.
//! - `dependsOn`: HEALTHY → `service_healthy`, SUCCESS and COMPLETE →
//!   `service_completed_successfully` (Compose has no "exited with any code"), START →
//!   `service_started`.
//! - `stopTimeout` → `stop_grace_period`; `healthCheck` → `healthcheck` verbatim (CMD form);
//!   `cpu` → `cpu_shares` (what ECS sets), and the task's `cpu`/`memory` cap every container
//!   (`cpus`, `mem_limit`) since no container can use more than its task has;
//!   `memoryReservation` → `mem_reservation`; `memory` → `mem_limit`; `user`,
//!   `readonlyRootFilesystem`, `command`, `entryPoint`, `environment` carry over.
//! - `secrets` become environment variables passed through from the caller's environment.
//! - Task `volumes` and container `mountPoints`: a volume with `host.sourcePath` becomes a
//!   bind mount, any other (Fargate's ephemeral task storage, EFS) a named volume shared by
//!   the containers that mount it, as the task's volume is.
//! - `essential` becomes the label `fargo.essential`.
//! - `${NAME}` placeholders become Compose variables: IMAGE_REPO and IMAGE_TAG default to
//!   the local image names `docker/build-images.sh` builds, OUTPUT_BUCKET to the data folder
//!   mounted in the job; any other is left for the caller's environment.
//! - A job task definition (`taskdefs/thumbnail-job.json`) becomes a one-shot service in
//!   the `job` profile, so `up` leaves it alone and `docker compose run` starts it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value};

use crate::taskdef::{ContainerDefinition, TaskDefError, TaskDefinition, fill_placeholders};

/// The file `fargo compose --check` and the drift test compare against.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
pub const ASSEMBLY: &str = "taskdefs/assembly.json";
pub const THUMBNAIL_JOB: &str = "taskdefs/thumbnail-job.json";

/// Defaults of the placeholders a local run fills: the names `docker/build-images.sh` tags,
/// and the data folder standing in for the job's output bucket.
const LOCAL_DEFAULTS: [(&str, &str); 3] = [
    ("IMAGE_REPO", "fargo"),
    ("IMAGE_TAG", "dev"),
    ("OUTPUT_BUCKET", DATA_MOUNT),
];

/// Where the host's `./data` appears in the job container.
const DATA_MOUNT: &str = "/data";

/// The local name of a service's image, `${IMAGE_REPO:-fargo}/fargo-NAME:${IMAGE_TAG:-dev}`:
/// one scheme for docker/build-images.sh, docker-compose.yml and `fargo watch --backend docker`.
pub fn local_image(service: &str) -> String {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| {
                LOCAL_DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, d)| (*d).to_owned())
            })
            .unwrap_or_default()
    };
    format!("{}/fargo-{service}:{}", var("IMAGE_REPO"), var("IMAGE_TAG"))
}

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// The assembly's task definition.
    #[arg(long, default_value = ASSEMBLY)]
    pub assembly: PathBuf,
    /// One-shot job task definitions (repeatable); default: taskdefs/thumbnail-job.json if it exists.
    #[arg(long = "job")]
    pub jobs: Vec<PathBuf>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Compare with the file instead of writing it; exit 1 if it differs.
    #[arg(long, conflicts_with = "output", num_args = 0..=1, default_missing_value = COMPOSE_FILE)]
    pub check: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    TaskDef(#[from] TaskDefError),
    #[error("{family}: networkMode `{mode}` has no Compose rendering (only awsvpc)")]
    NetworkMode { family: String, mode: String },
    #[error("{family}: no container without dependencies to own the network namespace")]
    NoRoot { family: String },
    #[error("{family}: container `{container}` depends on `{missing}`, which is not in the task")]
    UnknownDependency {
        family: String,
        container: String,
        missing: String,
    },
    #[error("{family}: container `{container}`: unknown dependsOn condition `{condition}`")]
    Condition {
        family: String,
        container: String,
        condition: String,
    },
    #[error(
        "{family}: container `{container}` mounts volume `{volume}`, which the task does not define"
    )]
    UnknownVolume {
        family: String,
        container: String,
        volume: String,
    },
    #[error("{family}: container `{container}` has no image")]
    NoImage { family: String, container: String },
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

pub async fn run(args: ComposeArgs) -> anyhow::Result<ExitCode> {
    let jobs = if args.jobs.is_empty() {
        default_jobs(Path::new("."))
    } else {
        args.jobs.clone()
    };
    let text = render_files(&args.assembly, &jobs)?;
    if let Some(path) = &args.check {
        let committed = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if committed == text {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "fargo compose: {} differs from what {} renders; run `fargo compose -o {}`",
            path.display(),
            args.assembly.display(),
            path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The job task definitions rendered when none are named: those of them that exist under `root`.
pub fn default_jobs(root: &Path) -> Vec<PathBuf> {
    [THUMBNAIL_JOB]
        .iter()
        .map(|p| root.join(p))
        .filter(|p| p.exists())
        .collect()
}

/// Loads and renders; the header names the files as given.
pub fn render_files(assembly: &Path, jobs: &[PathBuf]) -> Result<String, ComposeError> {
    let task = TaskDefinition::load(assembly)?;
    let job_defs = jobs
        .iter()
        .map(|p| TaskDefinition::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sources = vec![display(assembly)];
    sources.extend(jobs.iter().map(|p| display(p)));
    render(&task, &job_defs, &sources)
}

/// Paths as a person types them from the repository root, whatever the working directory.
fn display(p: &Path) -> String {
    let s = p.display().to_string();
    for known in [ASSEMBLY, THUMBNAIL_JOB] {
        if s.ends_with(known) {
            return known.to_owned();
        }
    }
    s
}

/// Renders the compose file for the assembly `task` and one-shot `jobs`.
pub fn render(
    task: &TaskDefinition,
    jobs: &[TaskDefinition],
    sources: &[String],
) -> Result<String, ComposeError> {
    let mut services = Mapping::new();
    let mut volumes = Mapping::new();
    let owner = network_owner(task)?;
    let limits = TaskLimits::of(task);
    for c in &task.container_definitions {
        let mut svc = service(task, c, &limits, &mut volumes)?;
        if c.name == owner {
            let ports = task
                .container_definitions
                .iter()
                .flat_map(|c| c.port_mappings.iter())
                .map(|p| {
                    let var = match p.extra.get("name").and_then(Json::as_str) {
                        Some(n) => format!("FARGO_PORT_{}", env_name(n)),
                        None => format!("FARGO_PORT_{}", p.container_port),
                    };
                    let host = p.host_port.unwrap_or(p.container_port);
                    let proto = p.protocol.as_deref().unwrap_or("tcp");
                    Value::from(format!(
                        "127.0.0.1:${{{var}:-{host}}}:{}/{proto}",
                        p.container_port
                    ))
                })
                .collect::<Vec<_>>();
            if !ports.is_empty() {
                svc.insert("ports".into(), Value::Sequence(ports));
            }
        } else {
            svc.insert(
                "network_mode".into(),
                Value::from(format!("service:{owner}")),
            );
        }
        services.insert(Value::from(c.name.clone()), Value::Mapping(svc));
    }
    for job in jobs {
        let limits = TaskLimits::of(job);
        for c in &job.container_definitions {
            let mut svc = service(job, c, &limits, &mut volumes)?;
            svc.insert("profiles".into(), Value::Sequence(vec!["job".into()]));
            let data = Value::from(format!("${{FARGO_DATA:-./data}}:{DATA_MOUNT}"));
            match svc.get_mut("volumes") {
                Some(Value::Sequence(v)) => v.push(data),
                _ => {
                    svc.insert("volumes".into(), Value::Sequence(vec![data]));
                }
            }
            services.insert(Value::from(c.name.clone()), Value::Mapping(svc));
        }
    }
    let mut root = Mapping::new();
    root.insert("services".into(), Value::Mapping(services));
    if !volumes.is_empty() {
        root.insert("volumes".into(), Value::Mapping(volumes));
    }
    let body = yaml11_safe(&serde_yaml::to_string(&Value::Mapping(root))?);
    Ok(format!("{}{body}", header(task, &owner, sources)))
}

/// Quotes the plain scalars YAML 1.1 reads as booleans (`no`, `on`, `y`...): serde_yaml
/// writes YAML 1.2, where they are strings, but docker-compose v1 parses with PyYAML.
/// (`true`/`false` strings serde_yaml already quotes; a plain `true` is a real boolean.)
fn yaml11_safe(yaml: &str) -> String {
    const BOOLS: [&str; 16] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let split = line.rfind(": ").map(|i| i + 2).or_else(|| {
            line.trim_start()
                .starts_with("- ")
                .then(|| line.find("- ").map_or(0, |i| i + 2))
        });
        match split {
            Some(i) if BOOLS.contains(&&line[i..]) => {
                out.push_str(&line[..i]);
                out.push('\'');
                out.push_str(&line[i..]);
                out.push('\'');
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn header(task: &TaskDefinition, owner: &str, sources: &[String]) -> String {
    let front = task
        .container_definitions
        .iter()
        .find(|c| !c.port_mappings.is_empty())
        .map_or(owner, |c| c.name.as_str());
    format!(
        "\
# GENERATED by `fargo compose` from {sources}: do not edit.
# Change the task definition, then run `fargo compose -o docker-compose.yml`; a test fails
# while this file differs from what the task definitions render.
#
# The `{family}` task as ECS on Fargate runs it (awsvpc): `{owner}` owns the network
# namespace and publishes the port of `{front}` on 127.0.0.1; every other container joins
# it (network_mode: service:{owner}) and they reach each other on localhost.
#
#   docker/build-images.sh          # or: docker compose build
#   docker compose up -d --wait     # docker-compose v1: docker/compose-up.sh
#   docker compose down
#
# ECS stops the task when an essential container (label fargo.essential) exits; Compose
# does that in the foreground with `docker compose up --abort-on-container-exit`.
#
# The on-demand thumbnail job (profile `job`) reads and writes ./data, mounted at {DATA_MOUNT}
# (FARGO_DATA overrides the host folder; it must be writable by uid 10001). Drop a video
# into ./data/in and either start one job by hand, with the overrides ECS would get:
#   docker compose run --rm -e INPUT_VIDEO_FILE_URL={DATA_MOUNT}/in/clip.mp4 \\
#     -e POSITION_TIME_DURATION=1 -e OUTPUT_S3_PATH={DATA_MOUNT}/out -e OUTPUT_THUMBS_FILE_NAME=clip.png thumbnail-job
# or let the invoker watch the folder and start one container per new video through the
# Docker Engine API (image ${{IMAGE_REPO:-fargo}}/fargo-thumbnail:${{IMAGE_TAG:-dev}}, `job`):
#   fargo watch ./data/in -o ./data/out --backend docker
# It bind-mounts the input folder read-only at /data/in and the output folder at /data/out,
# hands the job the video's path, position and output as ECS container overrides would, and
# removes each container once it has ended; the thumbnail lands as VIDEO-NAME.png.
#
# Credentials: the auth-proxy reads API keys and access rules from FARGO_* variables; add
# yours in an override file (docker compose -f docker-compose.yml -f mine.yml up), e.g.
#   services: {{auth-proxy: {{environment: {{FARGO_API_KEYS__ME__HASH: 'sha256:<hex>',
#     FARGO_ACCESS__ME__PRINCIPALS: me, FARGO_ACCESS__ME__METHODS: '*'}}}}}}
",
        sources = sources.join(" and "),
        family = task.family,
    )
}

/// The task-level hard limits every container is capped at.
struct TaskLimits {
    cpus: Option<f64>,
    memory_mib: Option<u64>,
}

impl TaskLimits {
    fn of(task: &TaskDefinition) -> Self {
        Self {
            cpus: task
                .cpu
                .as_deref()
                .and_then(|c| c.parse::<f64>().ok())
                .map(|units| units / 1024.0),
            memory_mib: task.memory.as_deref().and_then(|m| m.parse().ok()),
        }
    }
}

/// The container every other one joins: the first without dependencies.
fn network_owner(task: &TaskDefinition) -> Result<String, ComposeError> {
    if let Some(mode) = task.network_mode.as_deref()
        && mode != "awsvpc"
    {
        return Err(ComposeError::NetworkMode {
            family: task.family.clone(),
            mode: mode.to_owned(),
        });
    }
    let names: BTreeSet<&str> = task
        .container_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for c in &task.container_definitions {
        for d in &c.depends_on {
            if !names.contains(d.container_name.as_str()) {
                return Err(ComposeError::UnknownDependency {
                    family: task.family.clone(),
                    container: c.name.clone(),
                    missing: d.container_name.clone(),
                });
            }
        }
    }
    task.container_definitions
        .iter()
        .find(|c| c.depends_on.is_empty())
        .map(|c| c.name.clone())
        .ok_or_else(|| ComposeError::NoRoot {
            family: task.family.clone(),
        })
}

/// Compose `volumes` entries for the container's `mountPoints`; named volumes are added
/// to `named` (the file's top-level `volumes`).
fn mounts(
    task: &TaskDefinition,
    c: &ContainerDefinition,
    named: &mut Mapping,
) -> Result<Vec<Value>, ComposeError> {
    let task_volumes = task.extra.get("volumes").and_then(Json::as_array);
    let mut out = Vec::new();
    for m in c
        .extra
        .get("mountPoints")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let source = m.get("sourceVolume").and_then(Json::as_str).unwrap_or("");
        let path = m.get("containerPath").and_then(Json::as_str).unwrap_or("");
        let volume = task_volumes
            .into_iter()
            .flatten()
            .find(|v| v.get("name").and_then(Json::as_str) == Some(source))
            .ok_or_else(|| ComposeError::UnknownVolume {
                family: task.family.clone(),
                container: c.name.clone(),
                volume: source.to_owned(),
            })?;
        let from = match volume
            .get("host")
            .and_then(|h| h.get("sourcePath"))
            .and_then(Json::as_str)
        {
            Some(host) => compose_str(host),
            None => {
                named.insert(source.into(), Value::Mapping(Mapping::new()));
                source.to_owned()
            }
        };
        let ro = m.get("readOnly").and_then(Json::as_bool) == Some(true);
        out.push(Value::from(format!(
            "{from}:{}{}",
            compose_str(path),
            if ro { ":ro" } else { "" }
        )));
    }
    Ok(out)
}

fn service(
    task: &TaskDefinition,
    c: &ContainerDefinition,
    limits: &TaskLimits,
    named_volumes: &mut Mapping,
) -> Result<Mapping, ComposeError> {
    let mut s = Mapping::new();
    let image = c.image.as_deref().ok_or_else(|| ComposeError::NoImage {
        family: task.family.clone(),
        container: c.name.clone(),
    })?;
    s.insert("image".into(), compose_str(image).into());
    let mut build = Mapping::new();
    build.insert("context".into(), ".".into());
    build.insert("target".into(), build_target(image).into());
    s.insert("build".into(), Value::Mapping(build));
    if let Some(ep) = c.extra.get("entryPoint").and_then(Json::as_array) {
        s.insert("entrypoint".into(), strings(ep));
    }
    if let Some(cmd) = &c.command {
        s.insert(
            "command".into(),
            Value::Sequence(cmd.iter().map(|a| compose_str(a).into()).collect()),
        );
    }
    if let Some(user) = c.extra.get("user").and_then(Json::as_str) {
        s.insert("user".into(), compose_str(user).into());
    }
    if c.extra
        .get("readonlyRootFilesystem")
        .and_then(Json::as_bool)
        == Some(true)
    {
        s.insert("read_only".into(), true.into());
    }
    let volumes = mounts(task, c, named_volumes)?;
    if !volumes.is_empty() {
        s.insert("volumes".into(), Value::Sequence(volumes));
    }

    let mut env = Mapping::new();
    for kv in &c.environment {
        env.insert(kv.name.clone().into(), compose_str(&kv.value).into());
    }
    for secret in c
        .extra
        .get("secrets")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = secret.get("name").and_then(Json::as_str) {
            // ECS fetches it from Secrets Manager; locally it comes from the caller.
            env.insert(name.into(), format!("${{{name}:-}}").into());
        }
    }
    if !env.is_empty() {
        s.insert("environment".into(), Value::Mapping(env));
    }

    if !c.depends_on.is_empty() {
        let mut deps = Mapping::new();
        for d in &c.depends_on {
            let condition = match d.condition.as_str() {
                "HEALTHY" => "service_healthy",
                "SUCCESS" | "COMPLETE" => "service_completed_successfully",
                "START" => "service_started",
                other => {
                    return Err(ComposeError::Condition {
                        family: task.family.clone(),
                        container: c.name.clone(),
                        condition: other.to_owned(),
                    });
                }
            };
            let mut m = Mapping::new();
            m.insert("condition".into(), condition.into());
            deps.insert(d.container_name.clone().into(), Value::Mapping(m));
        }
        s.insert("depends_on".into(), Value::Mapping(deps));
    }

    if let Some(hc) = &c.health_check {
        let mut h = Mapping::new();
        h.insert(
            "test".into(),
            Value::Sequence(hc.command.iter().map(|a| compose_str(a).into()).collect()),
        );
        let secs = |s: Option<i64>| s.map(|s| Value::from(format!("{s}s")));
        for (key, value) in [
            ("interval", secs(hc.interval)),
            ("timeout", secs(hc.timeout)),
            ("retries", hc.retries.map(Value::from)),
            ("start_period", secs(hc.start_period)),
        ] {
            if let Some(v) = value {
                h.insert(key.into(), v);
            }
        }
        s.insert("healthcheck".into(), Value::Mapping(h));
    }
    if let Some(t) = c.stop_timeout {
        s.insert("stop_grace_period".into(), format!("{t}s").into());
    }

    if let Some(cpu) = c.extra.get("cpu").and_then(Json::as_u64).filter(|c| *c > 0) {
        s.insert("cpu_shares".into(), cpu.into());
    }
    if let Some(cpus) = limits.cpus {
        s.insert("cpus".into(), cpus.into());
    }
    let hard = c.extra.get("memory").and_then(Json::as_u64);
    let mem_limit = match (hard, limits.memory_mib) {
        (Some(h), Some(t)) => Some(h.min(t)),
        (h, t) => h.or(t),
    };
    if let Some(m) = mem_limit {
        s.insert("mem_limit".into(), format!("{m}m").into());
    }
    if let Some(r) = c.extra.get("memoryReservation").and_then(Json::as_u64) {
        s.insert("mem_reservation".into(), format!("{r}m").into());
    }

    let mut labels = Mapping::new();
    labels.insert("fargo.task".into(), task.family.clone().into());
    labels.insert(
        "fargo.essential".into(),
        c.is_essential().to_string().into(),
    );
    s.insert("labels".into(), Value::Mapping(labels));
    Ok(s)
}

/// The Dockerfile target that builds `image`: `.../fargo-thumbnail:tag` → `thumbnail`.
fn build_target(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let name = last.split(':').next().unwrap_or(last);
    name.strip_prefix("fargo-").unwrap_or(name).to_owned()
}

fn strings(items: &[Json]) -> Value {
    Value::Sequence(
        items
            .iter()
            .filter_map(Json::as_str)
            .map(|s| compose_str(s).into())
            .collect(),
    )
}

/// `FOO-bar` → `FOO_BAR`.
fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A task-definition string as Compose must see it: a literal `$` doubled (Compose would
/// interpolate it), a `${NAME}` placeholder turned into a Compose variable.
fn compose_str(s: &str) -> String {
    // NUL cannot occur in JSON strings fargo writes, so it safely marks placeholders
    // while the remaining `$` are escaped.
    let (marked, _) = fill_placeholders(s, |name| Some(format!("\0{name}\0")));
    let escaped = marked.replace('$', "$$");
    let defaults: BTreeMap<&str, &str> = LOCAL_DEFAULTS.into_iter().collect();
    let mut out = String::with_capacity(escaped.len());
    let mut parts = escaped.split('\0');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for pair in rest.chunks(2) {
        let name = pair[0];
        match defaults.get(name) {
            Some(d) => out.push_str(&format!("${{{name}:-{d}}}")),
            // Compose warns about an unset variable; `:?` would fail the whole file.
            None => out.push_str(&format!("${{{name}}}")),
        }
        if let Some(text) = pair.get(1) {
            out.push_str(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The committed docker-compose.yml is exactly what the task definitions render.
    #[test]
    fn committed_compose_file_matches_the_task_definitions() {
        let root = repo();
        let rendered = render_files(&root.join(ASSEMBLY), &default_jobs(&root)).expect("renders");
        let committed = std::fs::read_to_string(root.join(COMPOSE_FILE)).expect("committed");
        assert!(
            committed == rendered,
            "docker-compose.yml is stale: run `cargo run -p fargo -- compose -o docker-compose.yml` \
             from the repository root and commit it"
        );
    }

    #[test]
    fn assembly_maps_awsvpc_dependencies_and_limits() {
        let task = TaskDefinition::load(&repo().join(ASSEMBLY)).unwrap();
        let text = render(&task, &[], &["t".into()]).unwrap();
        let body = text.split_once("\nservices:").map(|(_, b)| b).unwrap();
        let doc: Value = serde_yaml::from_str(&format!("services:{body}")).unwrap();
        let svc = |n: &str| doc["services"][n].clone();
        // logging has no dependencies, so it owns the namespace and publishes the proxy port.
        assert_eq!(
            svc("logging")["ports"][0].as_str(),
            Some("127.0.0.1:${FARGO_PORT_GRPC:-50051}:50051/tcp")
        );
        for n in ["thumbnail", "coin-value", "auth-proxy"] {
            assert_eq!(svc(n)["network_mode"].as_str(), Some("service:logging"));
            assert!(svc(n).get("ports").is_none());
        }
        assert_eq!(
            svc("auth-proxy")["depends_on"]["coin-value"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert_eq!(svc("logging")["stop_grace_period"].as_str(), Some("45s"));
        assert_eq!(
            svc("thumbnail")["healthcheck"]["test"],
            serde_yaml::from_str::<Value>(r#"["CMD", "/usr/local/bin/thumbnail", "healthcheck"]"#)
                .unwrap()
        );
        assert_eq!(svc("thumbnail")["healthcheck"]["retries"].as_u64(), Some(3));
        assert_eq!(svc("coin-value")["cpu_shares"].as_u64(), Some(384));
        assert_eq!(svc("coin-value")["cpus"].as_f64(), Some(1.0));
        assert_eq!(svc("coin-value")["mem_limit"].as_str(), Some("2048m"));
        assert_eq!(svc("coin-value")["mem_reservation"].as_str(), Some("512m"));
        assert_eq!(
            svc("coin-value")["environment"]["FARGO_SERVER__SHED_LOAD"].as_str(),
            Some("true")
        );
        assert_eq!(svc("auth-proxy")["user"].as_str(), Some("10001"));
        assert_eq!(svc("auth-proxy")["read_only"].as_bool(), Some(true));
        assert_eq!(
            svc("auth-proxy")["image"].as_str(),
            Some("${IMAGE_REPO:-fargo}/fargo-auth-proxy:${IMAGE_TAG:-dev}")
        );
        assert_eq!(
            svc("auth-proxy")["build"]["target"].as_str(),
            Some("auth-proxy")
        );
        assert_eq!(
            svc("auth-proxy")["labels"]["fargo.essential"].as_str(),
            Some("true")
        );
    }

    fn task(json: &str) -> TaskDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn conditions_secrets_and_jobs() {
        let t = task(
            r#"{"family":"f","containerDefinitions":[
                {"name":"init","image":"x/fargo-a:1","essential":false},
                {"name":"main","image":"x/fargo-b:1","dependsOn":[{"containerName":"init","condition":"SUCCESS"}],
                 "secrets":[{"name":"API_KEYS","valueFrom":"arn:aws:secretsmanager:r:1:secret:k"}]}]}"#,
        );
        let job = task(
            r#"{"family":"j","cpu":"512","containerDefinitions":[{"name":"thumbnail-job","image":"${IMAGE_REPO}/fargo-thumbnail:${IMAGE_TAG}","command":["job"]}]}"#,
        );
        let text = render(&t, &[job], &["a".into(), "b".into()]).unwrap();
        assert!(text.contains("condition: service_completed_successfully"));
        assert!(text.contains("API_KEYS: ${API_KEYS:-}"));
        assert!(text.contains("fargo.essential: 'false'"));
        assert!(text.contains("- job\n"));
        assert!(text.contains("- ${FARGO_DATA:-./data}:/data"));
        assert!(text.contains("cpus: 0.5"));
    }

    #[test]
    fn volumes_become_named_volumes_or_bind_mounts() {
        let t = task(
            r#"{"family":"f","volumes":[{"name":"scratch"},{"name":"cfg","host":{"sourcePath":"/etc/fargo"}}],
                "containerDefinitions":[{"name":"a","image":"i","mountPoints":[
                  {"sourceVolume":"scratch","containerPath":"/tmp"},
                  {"sourceVolume":"cfg","containerPath":"/cfg","readOnly":true}]}]}"#,
        );
        let text = render(&t, &[], &[]).unwrap();
        assert!(
            text.contains("    volumes:\n    - scratch:/tmp\n    - /etc/fargo:/cfg:ro\n"),
            "{text}"
        );
        assert!(text.contains("\nvolumes:\n  scratch: {}\n"), "{text}");
        let missing = task(
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","mountPoints":[{"sourceVolume":"x","containerPath":"/x"}]}]}"#,
        );
        let err = render(&missing, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("volume `x`"), "{err}");
    }

    #[test]
    fn bad_task_definitions_are_named() {
        let unknown = task(
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","dependsOn":[{"containerName":"b","condition":"HEALTHY"}]}]}"#,
        );
        let err = render(&unknown, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`a` depends on `b`"), "{err}");
        let bridge = task(r#"{"family":"f","networkMode":"bridge","containerDefinitions":[]}"#);
        let err = render(&bridge, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("bridge"), "{err}");
        let cond = task(
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i"},{"name":"b","image":"i","dependsOn":[{"containerName":"a","condition":"READY"}]}]}"#,
        );
        let err = render(&cond, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("READY"), "{err}");
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let t = task(
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","command":["on","x"],
                "environment":[{"name":"FLAG","value":"no"},{"name":"B","value":"true"}]}]}"#,
        );
        let text = render(&t, &[], &[]).unwrap();
        assert!(text.contains("FLAG: 'no'"), "{text}");
        assert!(text.contains("B: 'true'"), "{text}");
        assert!(text.contains("- 'on'\n"), "{text}");
        assert!(text.contains("- x\n"), "{text}");
    }

    #[test]
    fn strings_escape_dollars_and_map_placeholders() {
        assert_eq!(compose_str("a$b"), "a$$b");
        assert_eq!(
            compose_str("${IMAGE_REPO}/x:${IMAGE_TAG}"),
            "${IMAGE_REPO:-fargo}/x:${IMAGE_TAG:-dev}"
        );
        assert_eq!(compose_str("r=${REGION}"), "r=${REGION}");
        assert_eq!(
            compose_str("${OUTPUT_BUCKET}/thumbnails"),
            "${OUTPUT_BUCKET:-/data}/thumbnails"
        );
        assert_eq!(build_target("123.ecr/fargo-coin-value:abc"), "coin-value");
    }
}
