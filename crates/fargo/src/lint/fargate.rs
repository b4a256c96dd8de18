//! The Fargate rules the ECS API only reports at register, deploy or run time, or never
//! (a `CMD-SHELL` health check in an image without a shell just fails, forever).
//!
//! Works on the raw JSON so a file with type errors (reported by `model`) still gets every
//! rule that can run; a field of the wrong type is skipped here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Finding, Options, error, templated, warning};

/// Valid Fargate task sizes: cpu units and the memory (MiB) each allows.
fn memory_ok(cpu: u64, mem: u64) -> bool {
    let gb = 1024;
    let stepped =
        |lo: u64, hi: u64, step: u64| (lo..=hi).contains(&mem) && (mem - lo).is_multiple_of(step);
    match cpu {
        256 => [512, 1024, 2048].contains(&mem),
        512 => stepped(gb, 4 * gb, gb),
        1024 => stepped(2 * gb, 8 * gb, gb),
        2048 => stepped(4 * gb, 16 * gb, gb),
        4096 => stepped(8 * gb, 30 * gb, gb),
        8192 => stepped(16 * gb, 60 * gb, 4 * gb),
        16384 => stepped(32 * gb, 120 * gb, 8 * gb),
        _ => false,
    }
}

/// Task-level cpu: "1024" or "1 vCPU"; memory: "2048" or "2 GB".
fn parse_size(v: &Value, unit: &str, factor: f64) -> Option<u64> {
    let s = v.as_str()?.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let lower = s.to_ascii_lowercase();
    let num = lower.strip_suffix(unit)?.trim();
    let n: f64 = num.parse().ok()?;
    Some((n * factor).round() as u64)
}

fn containers(v: &Value) -> Vec<(usize, &serde_json::Map<String, Value>)> {
    v.get("containerDefinitions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_object().map(|o| (i, o)))
                .collect()
        })
        .unwrap_or_default()
}

fn cname(c: &serde_json::Map<String, Value>) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

pub fn check(v: &Value, opts: &Options, out: &mut Vec<Finding>) {
    let fargate = v
        .get("requiresCompatibilities")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|c| c.as_str() == Some("FARGATE")));
    if !fargate {
        warning(
            out,
            "fargate/requires-compatibilities",
            "requiresCompatibilities",
            "does not list FARGATE; the Fargate rules below are checked anyway",
        );
    }
    task_size(v, out);
    let cs = containers(v);
    let p = |i: usize, rest: &str| format!("containerDefinitions[{i}]{rest}");

    match v.get("networkMode").and_then(Value::as_str) {
        Some("awsvpc") => {}
        Some(m) if !templated(&Value::String(m.into())) => error(
            out,
            "fargate/network-mode",
            "networkMode",
            format!("Fargate requires awsvpc, not `{m}`"),
        ),
        Some(_) => {}
        None => error(
            out,
            "fargate/network-mode",
            "networkMode",
            "Fargate requires networkMode awsvpc",
        ),
    }

    if cs.len() > 10 {
        error(
            out,
            "fargate/container-count",
            "containerDefinitions",
            format!(
                "{} containers; a task definition holds at most 10",
                cs.len()
            ),
        );
    }
    if !cs.is_empty()
        && !cs
            .iter()
            .any(|(_, c)| c.get("essential").and_then(Value::as_bool).unwrap_or(true))
    {
        error(
            out,
            "fargate/essential",
            "containerDefinitions",
            "no container is essential; at least one must be",
        );
    }

    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in &cs {
        if let Some(first) = names.insert(cname(c), *i) {
            error(
                out,
                "fargate/container-name",
                p(*i, ".name"),
                format!(
                    "`{}` is also the name of containerDefinitions[{first}]",
                    cname(c)
                ),
            );
        }
    }

    // Ports: under awsvpc all containers share one network namespace.
    let mut ports: BTreeMap<(i64, String), String> = BTreeMap::new();
    for (i, c) in &cs {
        for (j, pm) in c
            .get("portMappings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(cp) = pm.get("containerPort").and_then(Value::as_i64) else {
                continue;
            };
            let here = p(*i, &format!(".portMappings[{j}]"));
            if let Some(hp) = pm.get("hostPort").and_then(Value::as_i64)
                && hp != cp
            {
                error(
                    out,
                    "fargate/host-port",
                    format!("{here}.hostPort"),
                    format!(
                        "{hp} differs from containerPort {cp}; under awsvpc hostPort must be absent or equal"
                    ),
                );
            }
            let proto = pm
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_ascii_lowercase();
            if let Some(first) = ports.insert((cp, proto.clone()), here.clone()) {
                error(
                    out,
                    "fargate/port-conflict",
                    format!("{here}.containerPort"),
                    format!(
                        "{cp}/{proto} is already mapped by {first}; containers of a task share one network namespace"
                    ),
                );
            }
        }
    }

    depends_on(&cs, &names, out);

    for (i, c) in &cs {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        if let Some(hc) = c.get("healthCheck") {
            health_check(hc, &p(*i, ".healthCheck"), out);
            let shell = hc
                .get("command")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                == Some("CMD-SHELL");
            if shell && let Some(pat) = shell_less(image, opts) {
                error(
                    out,
                    "fargate/cmd-shell",
                    p(*i, ".healthCheck.command[0]"),
                    format!(
                        "CMD-SHELL needs /bin/sh, but image `{image}` has none (matches `{pat}`); use CMD with an executable"
                    ),
                );
            }
        }
        for field in ["entryPoint", "command"] {
            let first = c
                .get(field)
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str);
            if let Some(sh @ ("sh" | "/bin/sh" | "bash" | "/bin/bash")) = first
                && let Some(pat) = shell_less(image, opts)
            {
                error(
                    out,
                    "fargate/cmd-shell",
                    p(*i, &format!(".{field}[0]")),
                    format!("`{sh}` does not exist in image `{image}` (matches `{pat}`)"),
                );
            }
        }
        if let Some(st) = c.get("stopTimeout").and_then(Value::as_i64)
            && !(0..=120).contains(&st)
        {
            error(
                out,
                "fargate/stop-timeout",
                p(*i, ".stopTimeout"),
                format!("{st} s; Fargate allows 0 to 120 s"),
            );
        }
        if let Some(st) = c.get("startTimeout").and_then(Value::as_i64)
            && !(2..=600).contains(&st)
        {
            error(
                out,
                "fargate/start-timeout",
                p(*i, ".startTimeout"),
                format!("{st} s; Fargate allows 2 to 600 s"),
            );
        }
        if c.get("privileged").and_then(Value::as_bool) == Some(true) {
            error(
                out,
                "fargate/linux-parameters",
                p(*i, ".privileged"),
                "privileged containers are not supported on Fargate",
            );
        }
        if let Some(lp) = c.get("linuxParameters").and_then(Value::as_object) {
            for bad in [
                "devices",
                "sharedMemorySize",
                "tmpfs",
                "maxSwap",
                "swappiness",
            ] {
                if lp.contains_key(bad) {
                    error(
                        out,
                        "fargate/linux-parameters",
                        p(*i, &format!(".linuxParameters.{bad}")),
                        "not supported on Fargate",
                    );
                }
            }
            for (j, cap) in lp
                .get("capabilities")
                .and_then(|c| c.get("add"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(cap) = cap.as_str()
                    && cap != "SYS_PTRACE"
                {
                    error(
                        out,
                        "fargate/linux-parameters",
                        p(*i, &format!(".linuxParameters.capabilities.add[{j}]")),
                        format!("`{cap}` cannot be added on Fargate (only SYS_PTRACE)"),
                    );
                }
            }
        }
    }

    if let Some(es) = v
        .get("ephemeralStorage")
        .and_then(|e| e.get("sizeInGiB"))
        .and_then(Value::as_i64)
        && !(21..=200).contains(&es)
    {
        error(
            out,
            "fargate/ephemeral-storage",
            "ephemeralStorage.sizeInGiB",
            format!("{es} GiB; Fargate allows 21 to 200 GiB"),
        );
    }
    container_resources(v, &cs, out);
}

fn shell_less<'a>(image: &str, opts: &'a Options) -> Option<&'a str> {
    opts.shell_less_images
        .iter()
        .find(|p| image.contains(p.as_str()))
        .map(String::as_str)
}

fn task_size(v: &Value, out: &mut Vec<Finding>) {
    let (Some(cpu_v), Some(mem_v)) = (v.get("cpu"), v.get("memory")) else {
        for f in ["cpu", "memory"] {
            if v.get(f).is_none() {
                error(
                    out,
                    "fargate/cpu-memory",
                    f,
                    "Fargate needs a task-level cpu and memory",
                );
            }
        }
        return;
    };
    // Wrong types are the model's findings; placeholders are checked once rendered.
    if !cpu_v.is_string() || !mem_v.is_string() || templated(cpu_v) || templated(mem_v) {
        return;
    }
    let cpu = parse_size(cpu_v, "vcpu", 1024.0);
    let mem = parse_size(mem_v, "gb", 1024.0);
    match (cpu, mem) {
        (Some(c), Some(m)) if memory_ok(c, m) => {}
        (Some(c), Some(m)) => error(
            out,
            "fargate/cpu-memory",
            "memory",
            format!(
                "cpu {c} with memory {m} MiB is not a Fargate task size (256: 512-2048; 512: 1-4 GB; 1024: 2-8 GB; 2048: 4-16 GB; 4096: 8-30 GB; 8192: 16-60 GB by 4; 16384: 32-120 GB by 8)"
            ),
        ),
        (None, _) => error(
            out,
            "fargate/cpu-memory",
            "cpu",
            "not a cpu size (e.g. \"1024\" or \"1 vCPU\")",
        ),
        (_, None) => error(
            out,
            "fargate/cpu-memory",
            "memory",
            "not a memory size (e.g. \"2048\" or \"2 GB\")",
        ),
    }
}

fn depends_on(
    cs: &[(usize, &serde_json::Map<String, Value>)],
    names: &BTreeMap<&str, usize>,
    out: &mut Vec<Finding>,
) {
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, c) in cs {
        let has_hc = |name: &str| {
            names
                .get(name)
                .and_then(|&k| cs.iter().find(|(j, _)| *j == k))
                .is_some_and(|(_, t)| t.contains_key("healthCheck"))
        };
        for (j, d) in c
            .get("dependsOn")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let here = format!("containerDefinitions[{i}].dependsOn[{j}]");
            let Some(target) = d.get("containerName").and_then(Value::as_str) else {
                continue;
            };
            if !names.contains_key(target) {
                error(
                    out,
                    "fargate/depends-on-target",
                    format!("{here}.containerName"),
                    format!("no container named `{target}` in this task definition"),
                );
                continue;
            }
            if target == cname(c) {
                error(
                    out,
                    "fargate/depends-on-cycle",
                    format!("{here}.containerName"),
                    "a container cannot depend on itself",
                );
                continue;
            }
            edges.entry(cname(c)).or_default().push(target);
            if d.get("condition").and_then(Value::as_str) == Some("HEALTHY") && !has_hc(target) {
                error(
                    out,
                    "fargate/healthy-needs-health-check",
                    format!("{here}.condition"),
                    format!("HEALTHY waits forever: `{target}` has no healthCheck"),
                );
            }
        }
    }
    // Depth-first search for a cycle; reported once, with the containers on it.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for &start in edges.keys() {
        let mut stack: Vec<&str> = Vec::new();
        if let Some(cycle) = find_cycle(start, &edges, &mut stack, &mut done) {
            error(
                out,
                "fargate/depends-on-cycle",
                "containerDefinitions",
                format!(
                    "dependsOn cycle: {}; the task would never start",
                    cycle.join(" -> ")
                ),
            );
            return;
        }
    }
}

fn find_cycle<'a>(
    node: &'a str,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    stack: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    if let Some(pos) = stack.iter().position(|n| *n == node) {
        let mut cycle = stack[pos..].to_vec();
        cycle.push(node);
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    stack.push(node);
    for &next in edges.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(next, edges, stack, done) {
            return Some(c);
        }
    }
    stack.pop();
    done.insert(node);
    None
}

fn health_check(hc: &Value, path: &str, out: &mut Vec<Finding>) {
    for (field, lo, hi) in [
        ("interval", 5, 300),
        ("timeout", 2, 60),
        ("retries", 1, 10),
        ("startPeriod", 0, 300),
    ] {
        if let Some(n) = hc.get(field).and_then(Value::as_i64)
            && !(lo..=hi).contains(&n)
        {
            error(
                out,
                "fargate/health-check-range",
                format!("{path}.{field}"),
                format!("{n}; ECS allows {lo} to {hi}"),
            );
        }
    }
    let cmd = hc.get("command").and_then(Value::as_array);
    let first = cmd.and_then(|a| a.first()).and_then(Value::as_str);
    if let Some(first) = first
        && !matches!(first, "CMD" | "CMD-SHELL" | "NONE")
    {
        error(
            out,
            "fargate/health-check-range",
            format!("{path}.command[0]"),
            format!("`{first}`: the command starts with CMD, CMD-SHELL or NONE"),
        );
    }
}

/// The containers' cpu units and memory must fit in the task's.
fn container_resources(
    v: &Value,
    cs: &[(usize, &serde_json::Map<String, Value>)],
    out: &mut Vec<Finding>,
) {
    let cpu = v.get("cpu").and_then(|c| parse_size(c, "vcpu", 1024.0));
    let mem = v.get("memory").and_then(|m| parse_size(m, "gb", 1024.0));
    let sum = |f: &str| -> u64 {
        cs.iter()
            .filter_map(|(_, c)| c.get(f).and_then(Value::as_u64))
            .sum()
    };
    if let Some(cpu) = cpu
        && sum("cpu") > cpu
    {
        error(
            out,
            "fargate/container-resources",
            "containerDefinitions",
            format!(
                "the containers' cpu adds up to {} units, more than the task's {cpu}",
                sum("cpu")
            ),
        );
    }
    if let Some(mem) = mem {
        let reserved: u64 = cs
            .iter()
            .filter_map(|(_, c)| {
                c.get("memoryReservation")
                    .or_else(|| c.get("memory"))
                    .and_then(Value::as_u64)
            })
            .sum();
        if reserved > mem {
            error(
                out,
                "fargate/container-resources",
                "containerDefinitions",
                format!("the containers reserve {reserved} MiB, more than the task's {mem} MiB"),
            );
        }
        for (i, c) in cs {
            if let Some(m) = c.get("memory").and_then(Value::as_u64)
                && m > mem
            {
                error(
                    out,
                    "fargate/container-resources",
                    format!("containerDefinitions[{i}].memory"),
                    format!("{m} MiB is more than the task's {mem} MiB"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory_ok;

    #[test]
    fn fargate_sizes() {
        assert!(memory_ok(256, 512));
        assert!(!memory_ok(256, 4096));
        assert!(memory_ok(1024, 2048));
        assert!(!memory_ok(1024, 2500));
        assert!(memory_ok(8192, 20480));
        assert!(!memory_ok(8192, 18432));
        assert!(memory_ok(16384, 122880));
        assert!(!memory_ok(300, 1024));
    }
}
