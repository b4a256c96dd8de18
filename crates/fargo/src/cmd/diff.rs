//! `fargo diff`: what deploy would change. The rendered task definition against the revision
//! the service runs (or the family's latest), and the service file against the live service.
//!
//! Both sides are normalised the way ECS fills defaults (essential, hostPort, protocol, cpu 0,
//! empty lists), so an unchanged file shows no changes; containers and environment entries
//! are matched by name, so a path reads `containerDefinitions[auth-proxy].image`.

use std::fmt;
use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::aws::Clients;
use crate::aws::json::ToJson;
use crate::cmd::deploy::{Defs, DefsArgs, describe_service, registered_taskdef, short};

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => write!(f, "~ {}: {o} -> {n}", self.path),
            (None, Some(n)) => write!(f, "+ {}: {n}", self.path),
            (Some(o), None) => write!(f, "- {}: {o}", self.path),
            (None, None) => Ok(()),
        }
    }
}

/// Fields ECS adds to a registered revision that a file never has.
const REGISTERED_ONLY: [&str; 9] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
];

/// The changes from the registered task definition `remote` to the file `local`.
pub fn taskdef_changes(local: &Value, remote: &Value) -> Vec<Change> {
    let mut remote = remote.clone();
    if let Value::Object(m) = &mut remote {
        for k in REGISTERED_ONLY {
            m.remove(k);
        }
    }
    let (l, r) = (normalize_taskdef(local), normalize_taskdef(&remote));
    let mut out = Vec::new();
    compare("", Some(&r), Some(&l), &mut out);
    out
}

/// The changes from the live service to the service file: only the file's fields count,
/// since the live service carries many more (events, counts, ARNs).
pub fn service_changes(local: &Value, live: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    subset("", local, live, &mut out);
    out
}

fn subset(path: &str, local: &Value, live: &Value, out: &mut Vec<Change>) {
    match (local, live) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, lv) in l {
                let p = join(path, k);
                match r.get(k) {
                    Some(rv) => subset(&p, lv, rv, out),
                    None if is_empty(lv) => {}
                    None => out.push(Change {
                        path: p,
                        old: None,
                        new: Some(lv.clone()),
                    }),
                }
            }
        }
        (l, r) if l != r => out.push(Change {
            path: path.to_owned(),
            old: Some(r.clone()),
            new: Some(l.clone()),
        }),
        _ => {}
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), prune(x)))
                .filter(|(_, x)| !is_empty(x))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

fn normalize_taskdef(v: &Value) -> Value {
    let mut v = prune(v);
    let awsvpc = v.get("networkMode").and_then(Value::as_str) == Some("awsvpc");
    if let Some(cs) = v
        .get_mut("containerDefinitions")
        .and_then(Value::as_array_mut)
    {
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("essential").or_insert(Value::Bool(true));
            c.entry("cpu").or_insert(Value::from(0));
            if let Some(env) = c.get_mut("environment").and_then(Value::as_array_mut) {
                env.sort_by(|a, b| name_of(a).cmp(name_of(b)));
            }
            for pm in c
                .get_mut("portMappings")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                pm.entry("protocol").or_insert(Value::from("tcp"));
                if awsvpc && let Some(cp) = pm.get("containerPort").cloned() {
                    pm.entry("hostPort").or_insert(cp);
                }
            }
        }
    }
    if let Some(tags) = v.get_mut("tags").and_then(Value::as_array_mut) {
        tags.sort_by(|a, b| {
            a.get("key")
                .and_then(Value::as_str)
                .cmp(&b.get("key").and_then(Value::as_str))
        });
    }
    v
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Arrays whose items all have a `name` are compared by name.
fn by_name(a: &[Value]) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for x in a {
        let n = x.get("name").and_then(Value::as_str)?;
        m.insert(n.to_owned(), x.clone());
    }
    (m.len() == a.len()).then_some(m)
}

fn compare(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    match (old, new) {
        (Some(Value::Object(o)), Some(Value::Object(n))) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                compare(&join(path, k), o.get(k), n.get(k), out);
            }
        }
        (Some(Value::Array(o)), Some(Value::Array(n))) if o != n => {
            if let (Some(om), Some(nm)) = (by_name(o), by_name(n)) {
                let mut keys: Vec<&String> = om.keys().chain(nm.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    compare(&format!("{path}[{k}]"), om.get(k), nm.get(k), out);
                }
            } else if o.len() == n.len() {
                for (i, (a, b)) in o.iter().zip(n).enumerate() {
                    compare(&format!("{path}[{i}]"), Some(a), Some(b), out);
                }
            } else {
                out.push(Change {
                    path: path.to_owned(),
                    old: Some(Value::Array(o.clone())),
                    new: Some(Value::Array(n.clone())),
                });
            }
        }
        (o, n) if o != n => out.push(Change {
            path: path.to_owned(),
            old: o.cloned(),
            new: n.cloned(),
        }),
        _ => {}
    }
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub defs: DefsArgs,
}

/// The diff as printed lines; shared with tests.
pub async fn diff(clients: &Clients, defs: &Defs) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let live = describe_service(clients, &defs.cluster, &defs.service_name).await?;
    let current_td = match &live {
        Some(s) => s.task_definition().map(str::to_owned),
        None => {
            lines.push(format!(
                "service {} on {}: does not exist; deploy would create it",
                defs.service_name, defs.cluster
            ));
            // The family's latest revision, if there is one.
            registered_taskdef(clients, defs.family())
                .await
                .ok()
                .and_then(|v| {
                    v.get("taskDefinitionArn")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
        }
    };
    match &current_td {
        Some(arn) => {
            let remote = registered_taskdef(clients, arn).await?;
            let changes = taskdef_changes(&defs.taskdef, &remote);
            if changes.is_empty() {
                lines.push(format!(
                    "task definition: no changes against {}",
                    short(arn)
                ));
            } else {
                lines.push(format!(
                    "task definition: {} change(s) against {}",
                    changes.len(),
                    short(arn)
                ));
                lines.extend(changes.iter().map(|c| format!("  {c}")));
            }
        }
        None => lines.push(format!(
            "task definition: family {} has no revision; deploy would register :1",
            defs.family()
        )),
    }
    if let Some(svc) = &live {
        let mut local = defs.service.clone();
        if let Value::Object(m) = &mut local {
            m.remove("taskDefinition");
            m.remove("clientToken");
            // The live service names its cluster by ARN.
            m.remove("cluster");
            if defs.scaling.is_some() {
                m.remove("desiredCount");
            }
        }
        let changes = service_changes(&local, &svc.to_json());
        if changes.is_empty() {
            lines.push(format!("service {}: no changes", defs.service_name));
        } else {
            lines.push(format!(
                "service {}: {} change(s)",
                defs.service_name,
                changes.len()
            ));
            lines.extend(changes.iter().map(|c| format!("  {c}")));
        }
    }
    Ok(lines)
}

pub async fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let clients = Clients::load(&args.defs.aws).await?;
    let defs = Defs::load(&args.defs, &clients.region)?;
    for line in diff(&clients, &defs).await? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_order_do_not_count_as_changes() {
        let local = json!({"family": "f", "networkMode": "awsvpc", "containerDefinitions": [
            {"name": "a", "image": "i:1", "environment": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
             "portMappings": [{"containerPort": 80}]}]});
        let remote = json!({"family": "f", "networkMode": "awsvpc", "revision": 3, "status": "ACTIVE",
            "containerDefinitions": [{"name": "a", "image": "i:1", "essential": true, "cpu": 0, "mountPoints": [],
             "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}]}]});
        assert_eq!(taskdef_changes(&local, &remote), vec![]);
    }

    #[test]
    fn changes_are_named_by_container() {
        let local = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i:2"}, {"name": "b", "image": "j"}]});
        let remote =
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i:1"}]});
        let lines: Vec<String> = taskdef_changes(&local, &remote)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            vec![
                "~ containerDefinitions[a].image: \"i:1\" -> \"i:2\"".to_owned(),
                "+ containerDefinitions[b]: {\"cpu\":0,\"essential\":true,\"image\":\"j\",\"name\":\"b\"}".to_owned(),
            ]
        );
    }

    #[test]
    fn service_diff_only_counts_the_files_fields() {
        let local = json!({"desiredCount": 3, "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["a"]}}});
        let live = json!({"desiredCount": 2, "runningCount": 2, "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["a"], "assignPublicIp": "DISABLED"}}});
        let c = service_changes(&local, &live);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].to_string(), "~ desiredCount: 2 -> 3");
    }
}
