//! `fargo up`: the Sidecar-Assembly on this machine, no Docker, no AWS.
//!
//! Reads the task definition (ports, environment, dependsOn, healthCheck, stopTimeout)
//! and plays the ECS agent's part: each container becomes a child process of this
//! executable (`fargo sidecar NAME ...`), started in dependency order once its
//! dependencies meet their condition, and stopped in reverse order on Ctrl-C/SIGTERM
//! (SIGTERM, then SIGKILL after `stopTimeout`). An essential container that exits
//! stops the whole task, as on ECS.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::taskdef::{ContainerDefinition, TaskDefinition};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Task definition to run.
    #[arg(long, default_value = "taskdefs/assembly.json")]
    pub taskdef: PathBuf,
    /// Development API key to accept; a random one is made when absent.
    #[arg(long, env = "FARGO_DEV_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Folder for local storage (videos in, thumbnails out).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

/// One running container.
struct Running {
    name: String,
    child: Child,
    stop_timeout: Duration,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let td = TaskDefinition::load(&args.taskdef)?;
    let order = start_order(&td)?;
    let listens = listen_addrs(&td)?;
    for (name, addr) in &listens {
        check_port_free(name, *addr)?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let api_key = args.api_key.clone().unwrap_or_else(random_key);
    let exe = std::env::current_exe().context("locating the fargo executable")?;

    let shutdown = fargo_runtime::Shutdown::on_signals();
    let mut running: Vec<Running> = Vec::new();
    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let result = async {
        for name in &order {
            let Some(c) = td.container(name) else {
                continue;
            };
            for dep in &c.depends_on {
                wait_condition(&td, &listens, &running, dep, &shutdown).await?;
            }
            let child = spawn(&exe, c, &args, &api_key)?;
            tracing::debug!(container = %name, "started");
            running.push(Running {
                    name: name.clone(),
                    child,
                    stop_timeout: Duration::from_secs(
                        c.stop_timeout.unwrap_or(30).clamp(1, 120) as u64
                    ),
                });
        }
        for name in &order {
            if let Some(c) = td.container(name)
                && c.health_check.is_some()
                && let Some(addr) = listens.get(name)
            {
                wait_healthy(name, *addr, health_budget(c), &shutdown).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;

    if let Err(e) = result {
        eprintln!("fargo up: {e:#}");
        stop_all(&mut running).await;
        return Ok(ExitCode::FAILURE);
    }

    let endpoint = listens.get("auth-proxy").map_or_else(
        || "http://127.0.0.1:50051".to_owned(),
        |a| format!("http://{}", fargo_runtime::cli::local_addr(*a)),
    );
    println!(
        "fargo is up: {} containers from {}",
        running.len(),
        args.taskdef.display()
    );
    println!("  endpoint:  {endpoint}");
    println!(
        "  api key:   {api_key}   (send as the `x-api-key` header; FARGO_API_KEY for fargo's client commands)"
    );
    println!(
        "  try:       grpcurl -plaintext -H 'x-api-key: {api_key}' {} list",
        endpoint.trim_start_matches("http://")
    );
    println!("  stop:      Ctrl-C (drains every container, logging last)");

    // Watch for a container exiting on its own, which stops the task when it is essential.
    let essential: HashMap<String, bool> = td
        .container_definitions
        .iter()
        .map(|c| (c.name.clone(), c.is_essential()))
        .collect();
    let code = loop {
        tokio::select! {
            () = shutdown.wait() => break ExitCode::SUCCESS,
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                for r in &mut running {
                    if let Ok(Some(status)) = r.child.try_wait() {
                        let _ = exit_tx.send((r.name.clone(), status.to_string()));
                    }
                }
            }
            Some((name, status)) = exit_rx.recv() => {
                if essential.get(&name).copied().unwrap_or(true) {
                    eprintln!("fargo up: essential container `{name}` exited ({status}); stopping the task");
                    break ExitCode::FAILURE;
                }
                eprintln!("fargo up: container `{name}` exited ({status})");
                running.retain(|r| r.name != name);
            }
        }
    };
    let clean = stop_all(&mut running).await;
    Ok(if clean { code } else { ExitCode::FAILURE })
}

/// Containers in an order where each comes after everything it depends on.
pub fn start_order(td: &TaskDefinition) -> anyhow::Result<Vec<String>> {
    let names: Vec<&str> = td
        .container_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1 = visiting, 2 = done
    fn visit<'a>(
        td: &'a TaskDefinition,
        name: &'a str,
        state: &mut HashMap<&'a str, u8>,
        order: &mut Vec<String>,
        path: &mut Vec<&'a str>,
    ) -> anyhow::Result<()> {
        match state.get(name) {
            Some(2) => return Ok(()),
            Some(_) => {
                path.push(name);
                bail!("dependsOn cycle: {}", path.join(" -> "));
            }
            None => {}
        }
        let Some(c) = td.container(name) else {
            bail!("dependsOn names container `{name}`, which the task definition does not have");
        };
        state.insert(name, 1);
        path.push(name);
        for d in &c.depends_on {
            if td.container(&d.container_name).is_none() {
                bail!(
                    "container `{name}` dependsOn `{}`, which the task definition does not have",
                    d.container_name
                );
            }
            visit(td, &d.container_name, state, order, path)?;
        }
        path.pop();
        state.insert(name, 2);
        order.push(name.to_owned());
        Ok(())
    }
    for n in names {
        visit(td, n, &mut state, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

/// Where each container listens, from its `FARGO_SERVER__LISTEN` environment entry.
fn listen_addrs(td: &TaskDefinition) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
    let mut out = BTreeMap::new();
    for c in &td.container_definitions {
        if let Some(v) = c.env().get("FARGO_SERVER__LISTEN") {
            let addr: SocketAddr = v.parse().with_context(|| {
                format!(
                    "container `{}`: FARGO_SERVER__LISTEN `{v}` is not an address",
                    c.name
                )
            })?;
            out.insert(c.name.clone(), addr);
        }
    }
    Ok(out)
}

fn check_port_free(name: &str, addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "container `{name}` cannot listen on {addr}: address in use (port {} is taken; is another `fargo up` running?)",
            addr.port()
        ),
        Err(e) => bail!("container `{name}` cannot listen on {addr}: {e}"),
    }
}

fn random_key() -> String {
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf).is_err() {
        // Startup only: fall back to a time-derived key rather than refusing to run locally.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf = (t.as_nanos() ^ u128::from(std::process::id())).to_le_bytes();
    }
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    format!("dev-{hex}")
}

fn spawn(
    exe: &std::path::Path,
    c: &ContainerDefinition,
    args: &UpArgs,
    api_key: &str,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("sidecar").arg(&c.name);
    cmd.args(c.command.clone().unwrap_or_else(|| vec!["serve".into()]));
    // The task definition is the container's whole FARGO_* environment, as on ECS.
    for (k, _) in std::env::vars() {
        if k.starts_with("FARGO_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in c.env() {
        cmd.env(k, v);
    }
    for (k, v) in local_overrides(&c.name, api_key) {
        cmd.env(k, v);
    }
    // Relative storage paths in requests resolve under the local data folder.
    cmd.current_dir(&args.data_dir);
    // Its own process group, so Ctrl-C reaches only fargo, which stops containers in order.
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting container `{}`", c.name))?;
    let width = 10;
    if let Some(out) = child.stdout.take() {
        let name = c.name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                println!("{name:>width$} | {l}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let name = c.name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("{name:>width$} | {l}");
            }
        });
    }
    Ok(child)
}

/// What differs between a local run and the task: a development credential for the
/// auth-proxy (only its hash reaches the process).
fn local_overrides(name: &str, api_key: &str) -> Vec<(String, String)> {
    if name == "auth-proxy" {
        auth_proxy::dev_env(api_key)
    } else {
        Vec::new()
    }
}

fn health_budget(c: &ContainerDefinition) -> Duration {
    let hc = c.health_check.as_ref();
    let start = hc.and_then(|h| h.start_period).unwrap_or(0);
    let interval = hc.and_then(|h| h.interval).unwrap_or(30);
    let retries = hc.and_then(|h| h.retries).unwrap_or(3);
    Duration::from_secs((start + interval * retries).clamp(10, 600) as u64)
}

async fn wait_healthy(
    name: &str,
    addr: SocketAddr,
    budget: Duration,
    shutdown: &fargo_runtime::Shutdown,
) -> anyhow::Result<()> {
    let addr = fargo_runtime::cli::local_addr(addr);
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < budget {
        if shutdown.is_triggered() {
            bail!("interrupted while waiting for `{name}` to become healthy");
        }
        match fargo_runtime::cli::check_health(addr, "", Duration::from_secs(1)).await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "NOT_SERVING".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("container `{name}` did not become healthy within {budget:?} ({last})")
}

async fn wait_condition(
    td: &TaskDefinition,
    listens: &BTreeMap<String, SocketAddr>,
    running: &[Running],
    dep: &crate::taskdef::Dependency,
    shutdown: &fargo_runtime::Shutdown,
) -> anyhow::Result<()> {
    let name = &dep.container_name;
    match dep.condition.as_str() {
        "START" => Ok(()),
        "HEALTHY" => {
            let Some(addr) = listens.get(name) else {
                bail!("`{name}` must be HEALTHY but has no FARGO_SERVER__LISTEN to check");
            };
            let Some(c) = td.container(name) else {
                bail!("unknown container `{name}`")
            };
            wait_healthy(name, *addr, health_budget(c), shutdown).await
        }
        "COMPLETE" | "SUCCESS" => {
            let Some(r) = running.iter().find(|r| &r.name == name) else {
                bail!("`{name}` was not started");
            };
            let pid = r.child.id();
            // Polling keeps `running` borrowed immutably; a one-shot container exits soon.
            loop {
                if shutdown.is_triggered() {
                    bail!("interrupted while waiting for `{name}` to complete");
                }
                if pid.is_none_or(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        other => bail!("unknown dependsOn condition `{other}` for `{name}`"),
    }
}

/// Stops containers in reverse start order; true when every one exited 0.
async fn stop_all(running: &mut Vec<Running>) -> bool {
    let mut clean = true;
    while let Some(mut r) = running.pop() {
        if let Ok(Some(status)) = r.child.try_wait() {
            clean &= status.success();
            continue;
        }
        if let Some(pid) = r.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(r.stop_timeout, r.child.wait()).await {
            Ok(Ok(status)) => {
                if !status.success() {
                    eprintln!("fargo up: `{}` exited with {status}", r.name);
                    clean = false;
                }
            }
            Ok(Err(e)) => {
                eprintln!("fargo up: waiting for `{}`: {e}", r.name);
                clean = false;
            }
            Err(_) => {
                eprintln!(
                    "fargo up: `{}` did not stop within {:?}; killing it",
                    r.name, r.stop_timeout
                );
                let _ = r.child.kill().await;
                clean = false;
            }
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(json: &str) -> TaskDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn order_follows_depends_on_and_rejects_cycles() {
        let ok = td(r#"{"family":"f","containerDefinitions":[
            {"name":"a","dependsOn":[{"containerName":"b","condition":"HEALTHY"}]},
            {"name":"b","dependsOn":[{"containerName":"c","condition":"START"}]},
            {"name":"c"}]}"#);
        assert_eq!(start_order(&ok).unwrap(), vec!["c", "b", "a"]);
        let cyc = td(r#"{"family":"f","containerDefinitions":[
            {"name":"a","dependsOn":[{"containerName":"b","condition":"HEALTHY"}]},
            {"name":"b","dependsOn":[{"containerName":"a","condition":"HEALTHY"}]}]}"#);
        let err = start_order(&cyc).unwrap_err().to_string();
        assert!(
            err.contains("cycle") && err.contains("a -> b -> a"),
            "{err}"
        );
        let missing = td(r#"{"family":"f","containerDefinitions":[
            {"name":"a","dependsOn":[{"containerName":"zz","condition":"HEALTHY"}]}]}"#);
        assert!(
            start_order(&missing)
                .unwrap_err()
                .to_string()
                .contains("zz")
        );
    }

    #[test]
    fn assembly_starts_logging_first_and_proxy_last() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../taskdefs/assembly.json");
        let td = TaskDefinition::load(std::path::Path::new(path)).unwrap();
        let order = start_order(&td).unwrap();
        assert_eq!(order.first().map(String::as_str), Some("logging"));
        assert_eq!(order.last().map(String::as_str), Some("auth-proxy"));
        let listens = listen_addrs(&td).unwrap();
        assert_eq!(listens.len(), 4);
    }
}
