//! `fargo watch IN -o OUT`: the Container-on-Demand invoker. Watches a folder or an S3
//! prefix and launches one thumbnail job per new video through the chosen backend,
//! never twice for one object version, and reports every job's exit code and reason.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fargo_runtime::storage::{Location, ObjectInfo, Storage};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::invoker::{self, JobSpec, Launcher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A child process of this binary (nothing else needed).
    Local,
    /// A container through the Docker Engine API.
    Docker,
    /// An ECS RunTask on Fargate.
    Ecs,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Folder or s3://bucket/prefix to watch for videos.
    pub input: String,
    /// Folder or s3://bucket/prefix the thumbnails go to, as VIDEO-NAME.FORMAT.
    #[arg(long, short = 'o')]
    pub output: String,
    /// Position of the thumbnail in each video.
    #[arg(long, default_value = "1")]
    pub at: String,
    /// png, jpg or webp.
    #[arg(long, default_value = "png")]
    pub format: String,
    #[arg(long, value_enum, default_value = "local")]
    pub backend: Backend,
    /// Time between scans.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Scan once, wait for the jobs, exit (1 when any job failed).
    #[arg(long)]
    pub once: bool,
    /// File that remembers launched objects across restarts (one line per object version).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Jobs running at once.
    #[arg(long, default_value_t = 2)]
    pub max_jobs: usize,
    /// Docker backend: the image whose entrypoint is the `thumbnail` binary [default:
    /// ${IMAGE_REPO:-fargo}/fargo-thumbnail:${IMAGE_TAG:-dev}, what docker/build-images.sh
    /// builds and docker-compose.yml runs].
    #[arg(long)]
    pub image: Option<String>,
    /// Docker backend: the job's task definition, whose task-level cpu and memory become
    /// each container's limits, as Fargate would size the task (none when it is absent).
    #[arg(long, default_value = "taskdefs/thumbnail-job.json")]
    pub job_taskdef: PathBuf,
    /// ECS backend: cluster, task definition (family[:revision] or ARN), container name.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    #[arg(long, default_value = "fargo-thumbnail-job")]
    pub task_definition: String,
    #[arg(long, default_value = "thumbnail-job")]
    pub container: String,
    #[arg(long, value_delimiter = ',')]
    pub subnets: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub security_groups: Vec<String>,
    /// ECS backend: time between DescribeTasks while a task runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub poll: Duration,
    #[command(flatten)]
    pub aws: crate::aws::AwsArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

const VIDEO_EXTENSIONS: [&str; 14] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "ts", "mts", "mpg", "mpeg", "flv", "3gp", "wmv",
    "ogv",
];

fn is_video(uri: &str) -> bool {
    std::path::Path::new(uri)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// What makes one version of an object distinct: its ETag, or size and mtime.
fn version(o: &ObjectInfo) -> String {
    o.etag
        .clone()
        .unwrap_or_else(|| format!("{}-{}", o.size, o.last_modified_ms))
}

async fn launcher(args: &WatchArgs) -> anyhow::Result<Launcher> {
    Ok(match args.backend {
        Backend::Local => Launcher::Local(invoker::local::Local::this_binary()?),
        Backend::Docker => {
            let env = std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect();
            let image = args
                .image
                .clone()
                .unwrap_or_else(|| crate::cmd::compose::local_image("thumbnail"));
            let limits = if args.job_taskdef.exists() {
                let td = crate::taskdef::TaskDefinition::load(&args.job_taskdef)?;
                invoker::docker::Limits::of_taskdef(&td)
            } else {
                eprintln!(
                    "fargo watch: {} not found: job containers run without cpu or memory limits",
                    args.job_taskdef.display()
                );
                invoker::docker::Limits::default()
            };
            Launcher::Docker(
                invoker::docker::DockerLauncher::connect(image, vec!["job".into()], env)?
                    .with_host_folders(&args.input, &args.output)?
                    .with_limits(limits),
            )
        }
        Backend::Ecs => {
            let clients = crate::aws::Clients::load(&args.aws).await?;
            Launcher::Ecs(invoker::ecs::EcsLauncher {
                client: clients.ecs,
                cluster: args.cluster.clone(),
                task_definition: args.task_definition.clone(),
                container: args.container.clone(),
                subnets: args.subnets.clone(),
                security_groups: args.security_groups.clone(),
                poll: args.poll,
            })
        }
    })
}

pub async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let storage = Storage::from_env();
    Location::parse(&args.output).context("--output")?;
    let launcher = Arc::new(launcher(&args).await?);
    let mut seen: HashSet<String> = match &args.state {
        Some(p) if p.exists() => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(str::to_owned)
            .collect(),
        _ => HashSet::new(),
    };
    let slots = Arc::new(Semaphore::new(args.max_jobs.max(1)));
    let mut jobs = JoinSet::new();
    let (mut launched, mut failed) = (0usize, 0usize);
    loop {
        let objects = storage
            .list(&args.input)
            .await
            .with_context(|| format!("listing {}", args.input))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for o in objects {
            if !is_video(&o.uri) {
                continue;
            }
            let id = format!("{}\t{}", o.uri, version(&o));
            if seen.contains(&id) {
                continue;
            }
            // A local file modified within the last second may still be being copied in.
            if matches!(Location::parse(&o.uri), Ok(Location::Local(_)))
                && now_ms - o.last_modified_ms < 1000
                && !args.once
            {
                continue;
            }
            seen.insert(id.clone());
            if let Some(p) = &args.state {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("writing {}", p.display()))?;
                writeln!(f, "{id}")?;
            }
            let stem = std::path::Path::new(&o.uri)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("video")
                .to_owned();
            let spec = JobSpec {
                input_uri: o.uri.clone(),
                position: args.at.clone(),
                output_dir: args.output.clone(),
                output_name: format!("{stem}.{}", args.format),
                token: invoker::token(&o.uri, &version(&o)),
            };
            launched += 1;
            let (launcher, slots) = (launcher.clone(), slots.clone());
            jobs.spawn(async move {
                let _permit = slots.acquire_owned().await;
                let r = launcher.run(&spec).await;
                (spec, r)
            });
        }
        // Report what finished; in --once mode, everything.
        while let Some(done) = if args.once {
            jobs.join_next().await
        } else {
            jobs.try_join_next()
        } {
            let Ok((spec, r)) = done else { continue };
            match r {
                Ok(o) if o.success() => println!(
                    "ok\t{}\t{}/{}\t({})",
                    spec.input_uri, spec.output_dir, spec.output_name, o.id
                ),
                Ok(o) => {
                    failed += 1;
                    let code = o.exit_code.map_or("none".to_owned(), |c| c.to_string());
                    println!(
                        "FAILED\t{}\texit {code}\t{}\t({})",
                        spec.input_uri, o.reason, o.id
                    );
                }
                Err(e) => {
                    failed += 1;
                    println!("FAILED\t{}\t{e}", spec.input_uri);
                }
            }
        }
        if args.once {
            eprintln!("fargo watch: {launched} launched, {failed} failed");
            return Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(args.interval).await;
    }
}
