//! Driving the real Docker engine and Compose from the end-to-end test: one project per
//! test run, torn down on drop, and the checks reported one by one so a run says exactly
//! which parts of the assembly work under Compose.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `docker/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd`, returning its output or a message naming the program that could not start.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    cmd.output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// `Ok(server version)` when the engine answers, else why not, in plain words.
pub fn engine() -> Result<String, String> {
    let out = run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))?;
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "the Docker engine is unreachable: `docker version` says: {}",
            text(&out.stderr)
        ))
    }
}

/// The Compose command here: the plugin (`docker compose`) or docker-compose v1.
pub fn compose_program() -> Result<Vec<String>, String> {
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if plugin.is_ok_and(|o| o.status.success()) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    let v1 = Command::new("docker-compose").arg("version").output();
    if v1.is_ok_and(|o| o.status.success()) {
        return Ok(vec!["docker-compose".into()]);
    }
    Err("neither `docker compose` nor docker-compose is installed".into())
}

/// One Compose project of the repository's docker-compose.yml; `down -v` on drop.
#[derive(Debug)]
pub struct Stack {
    pub project: String,
    program: Vec<String>,
    /// `-f` arguments: the repository's docker-compose.yml, then any overrides.
    files: Vec<String>,
    env: Vec<(String, String)>,
    down: bool,
}

impl Stack {
    /// A project of docker-compose.yml merged with `overrides` (Compose's `-f a -f b`).
    pub fn new(
        project: &str,
        overrides: &[PathBuf],
        env: Vec<(String, String)>,
    ) -> Result<Self, String> {
        let mut files = vec![
            "-f".to_owned(),
            repo_root().join("docker-compose.yml").display().to_string(),
        ];
        for o in overrides {
            files.push("-f".into());
            files.push(o.display().to_string());
        }
        Ok(Self {
            project: project.to_owned(),
            program: compose_program()?,
            files,
            env,
            down: false,
        })
    }

    /// A `docker compose -p PROJECT ...` command run from the repository root.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .args(&self.files)
            .args(["-p", &self.project])
            .args(args)
            .current_dir(repo_root())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a compose subcommand; `Err` carries its stderr.
    pub fn compose<I, S>(&self, args: I) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = run(&mut self.command(args))?;
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(format!("{}{}", text(&out.stderr), text(&out.stdout)))
        }
    }

    /// `docker/compose-up.sh`: up -d and wait for every container to be healthy.
    pub fn up(&self, timeout: Duration) -> Result<String, String> {
        let root = repo_root();
        let out = run(Command::new(root.join("docker/compose-up.sh"))
            .args(&self.files)
            .args(["-p", &self.project, "--timeout"])
            .arg(timeout.as_secs().to_string())
            .current_dir(&root)
            .envs(self.env.iter().map(|(k, v)| (k, v))))?;
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if out.status.success() {
            Ok(all)
        } else {
            Err(all)
        }
    }

    /// The container id of `service`.
    pub fn container(&self, service: &str) -> Result<String, String> {
        let id = self.compose(["ps", "-q", service])?;
        id.lines()
            .next()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no container for service {service}"))
    }

    /// `docker compose down`, after which drop has nothing left to do.
    pub fn down(&mut self) -> Result<String, String> {
        self.down = true;
        self.compose(["down", "-v", "--remove-orphans"])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.down {
            let _ = self
                .command(["down", "-v", "--remove-orphans", "-t", "5"])
                .output();
        }
    }
}

/// `docker logs` of a container, stdout and stderr together.
pub fn logs(id: &str) -> Result<String, String> {
    let out = run(Command::new("docker").args(["logs", id]))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `docker inspect -f FORMAT id`.
pub fn inspect(id: &str, format: &str) -> Result<String, String> {
    let out = run(Command::new("docker").args(["inspect", "-f", format, id]))?;
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Whether any string in the JSON value `v` satisfies `pred`.
pub fn any_string(v: &serde_json::Value, pred: &dyn Fn(&str) -> bool) -> bool {
    match v {
        serde_json::Value::String(s) => pred(s),
        serde_json::Value::Array(a) => a.iter().any(|x| any_string(x, pred)),
        serde_json::Value::Object(o) => o.iter().any(|(k, x)| pred(k) || any_string(x, pred)),
        _ => false,
    }
}

/// The JSON lines of `log` that mention `needle` and come from `service` (some string
/// in the record equals the service name, e.g. its `service.name` resource attribute).
pub fn records<'a>(log: &'a str, service: &str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| any_string(&v, &|s| s == service))
        })
        .collect()
}

/// The outcome of each named check, printed as it happens and summed up at the end.
#[derive(Debug, Default)]
pub struct Checks {
    results: Vec<(String, Result<String, String>)>,
}

impl Checks {
    pub fn record(&mut self, name: &str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        match &result {
            Ok(detail) => println!("CHECK PASS {name}: {detail}"),
            Err(why) => println!("CHECK FAIL {name}: {why}"),
        }
        self.results.push((name.to_owned(), result));
        ok
    }

    pub fn failures(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub fn summary(&self) -> String {
        let passed = self.results.iter().filter(|(_, r)| r.is_ok()).count();
        format!(
            "docker e2e: {passed} of {} checks passed{}",
            self.results.len(),
            if passed == self.results.len() {
                String::new()
            } else {
                format!("; failed: {}", self.failures().join(", "))
            }
        )
    }
}

/// Polls `f` until it returns `Ok` or `timeout` passes; the last error otherwise.
pub fn eventually<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_match_service_and_call() {
        let log = concat!(
            r#"{"resource":{"service.name":"thumbnail"},"name":"/fargo.thumbnail.v1.ThumbnailService/ExtractUpload"}"#,
            "\n",
            r#"{"resource":{"service.name":"auth-proxy"},"name":"/fargo.thumbnail.v1.ThumbnailService/ExtractUpload"}"#,
            "\nnot json ThumbnailService\n"
        );
        assert_eq!(records(log, "thumbnail", "ThumbnailService").len(), 1);
        assert_eq!(records(log, "auth-proxy", "ThumbnailService").len(), 1);
        assert!(records(log, "coin-value", "ThumbnailService").is_empty());
    }

    #[test]
    fn checks_sum_up() {
        let mut c = Checks::default();
        c.record("a", Ok("fine".into()));
        c.record("b", Err("broken".into()));
        assert_eq!(c.summary(), "docker e2e: 1 of 2 checks passed; failed: b");
    }
}
