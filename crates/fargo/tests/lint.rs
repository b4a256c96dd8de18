//! `fargo lint`: every file in `taskdefs/` passes; every rule fires on a copy of
//! `taskdefs/assembly.json` broken in exactly that way, at the field it names; and the
//! vendored model agrees with botocore's own validator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use fargo::cmd::lint::{expand, lint_file};
use fargo::cmd::render::{Vars, render_value};
use fargo::lint::{Finding, Kind, Options, Severity, lint_value};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn assembly() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("taskdefs/assembly.json")).unwrap())
        .unwrap()
}

fn service() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("taskdefs/assembly.service.json")).unwrap(),
    )
    .unwrap()
}

fn scaling() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("taskdefs/assembly.scaling.json")).unwrap(),
    )
    .unwrap()
}

fn lint(kind: Kind, v: &Value) -> Vec<Finding> {
    lint_value(kind, v, &Options::default())
}

/// The findings of `rule`, as `path` strings; the unbroken file has none of them.
fn fired(kind: Kind, v: &Value, rule: &str) -> Vec<String> {
    lint(kind, v)
        .into_iter()
        .filter(|f| f.rule == rule)
        .map(|f| f.path)
        .collect()
}

/// Breaks a copy of assembly.json with `f` and asserts exactly `rule` fires, at `path`.
fn broken_taskdef(rule: &str, path: &str, f: impl FnOnce(&mut Value)) {
    assert!(
        fired(Kind::TaskDefinition, &assembly(), rule).is_empty(),
        "{rule} fires on the unbroken file"
    );
    let mut v = assembly();
    f(&mut v);
    let all = lint(Kind::TaskDefinition, &v);
    let errors: Vec<&Finding> = all
        .iter()
        .filter(|x| x.severity == Severity::Error)
        .collect();
    assert!(
        errors.iter().any(|x| x.rule == rule && x.path == path),
        "expected {rule} at {path}, got {all:#?}"
    );
    // Only the broken rule fires (a few breaks trip one closely related rule as well).
    for e in &errors {
        assert!(
            e.rule == rule || related(rule, e.rule),
            "unexpected {e} for {rule}"
        );
    }
}

fn related(a: &str, b: &str) -> bool {
    let pairs = [
        ("fargate/container-count", "fargate/container-resources"),
        ("fargate/container-count", "fargate/container-name"),
        ("fargate/container-name", "fargate/depends-on-target"),
        ("fargate/cpu-memory", "fargate/container-resources"),
        (
            "fargate/depends-on-target",
            "fargate/healthy-needs-health-check",
        ),
    ];
    pairs
        .iter()
        .any(|(x, y)| (a == *x && b == *y) || (a == *y && b == *x))
}

fn container(v: &mut Value, i: usize) -> &mut Value {
    &mut v["containerDefinitions"][i]
}

#[test]
fn every_file_in_taskdefs_passes() {
    let files = expand(&[repo().join("taskdefs")]).unwrap();
    assert!(files.iter().any(|f| f.ends_with("assembly.json")));
    assert!(files.iter().any(|f| f.ends_with("assembly.service.json")));
    assert!(files.iter().any(|f| f.ends_with("assembly.scaling.json")));
    assert!(files.iter().any(|f| f.ends_with("envs/dev.yaml")));
    for f in &files {
        let findings = lint_file(f, None, &Options::default());
        assert!(findings.is_empty(), "{}: {findings:#?}", f.display());
    }
    // Rendered for each environment: no placeholder left, still no finding.
    for env in ["dev", "prod"] {
        let vars = Vars::from_env_file(&repo().join(format!("taskdefs/envs/{env}.yaml"))).unwrap();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
        {
            let findings = lint_file(f, Some(&vars), &Options::default());
            assert!(findings.is_empty(), "{env} {}: {findings:#?}", f.display());
        }
    }
}

#[test]
fn model_required_member() {
    broken_taskdef(
        "model/required",
        "containerDefinitions[1].healthCheck.command",
        |v| {
            container(v, 1)["healthCheck"]
                .as_object_mut()
                .unwrap()
                .remove("command");
        },
    );
    broken_taskdef("model/required", "family", |v| {
        v.as_object_mut().unwrap().remove("family");
    });
}

#[test]
fn model_unknown_field_suggests_the_right_case() {
    broken_taskdef(
        "model/unknown-field",
        "containerDefinitions[3].portMappings[0].ContainerPort",
        |v| {
            let pm = container(v, 3)["portMappings"][0].as_object_mut().unwrap();
            let p = pm.remove("containerPort").unwrap();
            pm.insert("ContainerPort".into(), p);
        },
    );
    let mut v = assembly();
    v["memorySize"] = json!("2048");
    let f = lint(Kind::TaskDefinition, &v);
    assert!(
        f.iter()
            .any(|x| x.rule == "model/unknown-field" && x.path == "memorySize"),
        "{f:#?}"
    );
}

#[test]
fn model_type() {
    broken_taskdef("model/type", "cpu", |v| v["cpu"] = json!(1024));
    broken_taskdef("model/type", "containerDefinitions[0].essential", |v| {
        container(v, 0)["essential"] = json!("yes");
    });
}

#[test]
fn model_enum() {
    broken_taskdef(
        "model/enum",
        "containerDefinitions[2].dependsOn[0].condition",
        |v| {
            container(v, 2)["dependsOn"][0]["condition"] = json!("READY");
        },
    );
}

#[test]
fn cpu_memory_pair() {
    broken_taskdef("fargate/cpu-memory", "memory", |v| {
        v["memory"] = json!("16384")
    });
    broken_taskdef("fargate/cpu-memory", "memory", |v| {
        v["cpu"] = json!("256");
        v["memory"] = json!("4096");
    });
    // The API's other spellings are understood.
    let mut v = assembly();
    v["cpu"] = json!("1 vCPU");
    v["memory"] = json!("2 GB");
    assert!(fired(Kind::TaskDefinition, &v, "fargate/cpu-memory").is_empty());
}

#[test]
fn network_mode_awsvpc() {
    broken_taskdef("fargate/network-mode", "networkMode", |v| {
        v["networkMode"] = json!("bridge")
    });
}

#[test]
fn at_most_ten_containers() {
    broken_taskdef("fargate/container-count", "containerDefinitions", |v| {
        let cs = v["containerDefinitions"].as_array_mut().unwrap();
        for i in 0..7 {
            let mut c =
                json!({"name": format!("extra-{i}"), "image": "busybox", "essential": false});
            c["cpu"] = json!(0);
            cs.push(c);
        }
    });
}

#[test]
fn at_least_one_essential() {
    broken_taskdef("fargate/essential", "containerDefinitions", |v| {
        for c in v["containerDefinitions"].as_array_mut().unwrap() {
            c["essential"] = json!(false);
        }
    });
}

#[test]
fn unique_container_names() {
    broken_taskdef(
        "fargate/container-name",
        "containerDefinitions[2].name",
        |v| {
            container(v, 2)["name"] = json!("thumbnail");
        },
    );
}

#[test]
fn host_port_equals_container_port() {
    broken_taskdef(
        "fargate/host-port",
        "containerDefinitions[3].portMappings[0].hostPort",
        |v| {
            container(v, 3)["portMappings"][0]["hostPort"] = json!(8080);
        },
    );
    let mut v = assembly();
    container(&mut v, 3)["portMappings"][0]["hostPort"] = json!(50051);
    assert!(fired(Kind::TaskDefinition, &v, "fargate/host-port").is_empty());
}

#[test]
fn no_two_containers_on_one_port() {
    broken_taskdef(
        "fargate/port-conflict",
        "containerDefinitions[3].portMappings[0].containerPort",
        |v| {
            container(v, 1)["portMappings"] = json!([{"containerPort": 50051, "protocol": "tcp"}]);
        },
    );
}

#[test]
fn depends_on_target_exists() {
    broken_taskdef(
        "fargate/depends-on-target",
        "containerDefinitions[3].dependsOn[1].containerName",
        |v| {
            container(v, 3)["dependsOn"][1]["containerName"] = json!("thumbnails");
        },
    );
}

#[test]
fn depends_on_has_no_cycle() {
    broken_taskdef("fargate/depends-on-cycle", "containerDefinitions", |v| {
        container(v, 0)["dependsOn"] =
            json!([{"containerName": "auth-proxy", "condition": "START"}]);
    });
    let mut v = assembly();
    container(&mut v, 0)["dependsOn"] =
        json!([{"containerName": "auth-proxy", "condition": "START"}]);
    let f = lint(Kind::TaskDefinition, &v);
    let cycle = f
        .iter()
        .find(|x| x.rule == "fargate/depends-on-cycle")
        .unwrap();
    assert_eq!(
        cycle.message,
        "dependsOn cycle: auth-proxy -> logging -> auth-proxy; the task would never start"
    );
}

#[test]
fn healthy_needs_a_health_check() {
    broken_taskdef(
        "fargate/healthy-needs-health-check",
        "containerDefinitions[3].dependsOn[0].condition",
        |v| {
            container(v, 0)
                .as_object_mut()
                .unwrap()
                .remove("healthCheck");
        },
    );
}

#[test]
fn health_check_ranges() {
    broken_taskdef(
        "fargate/health-check-range",
        "containerDefinitions[1].healthCheck.interval",
        |v| {
            container(v, 1)["healthCheck"]["interval"] = json!(1);
        },
    );
    broken_taskdef(
        "fargate/health-check-range",
        "containerDefinitions[1].healthCheck.retries",
        |v| {
            container(v, 1)["healthCheck"]["retries"] = json!(11);
        },
    );
}

#[test]
fn cmd_shell_in_an_image_without_a_shell() {
    broken_taskdef(
        "fargate/cmd-shell",
        "containerDefinitions[2].healthCheck.command[0]",
        |v| {
            container(v, 2)["healthCheck"]["command"] =
                json!(["CMD-SHELL", "curl -f localhost || exit 1"]);
        },
    );
    // The same check in an image with a shell is fine.
    let mut v = assembly();
    container(&mut v, 2)["image"] = json!("public.ecr.aws/docker/library/alpine:3");
    container(&mut v, 2)["healthCheck"]["command"] = json!(["CMD-SHELL", "true"]);
    assert!(fired(Kind::TaskDefinition, &v, "fargate/cmd-shell").is_empty());
    broken_taskdef(
        "fargate/cmd-shell",
        "containerDefinitions[1].command[0]",
        |v| {
            container(v, 1)["command"] = json!(["sh", "-c", "serve"]);
        },
    );
}

#[test]
fn stop_timeout_at_most_120() {
    broken_taskdef(
        "fargate/stop-timeout",
        "containerDefinitions[0].stopTimeout",
        |v| {
            container(v, 0)["stopTimeout"] = json!(121);
        },
    );
}

#[test]
fn start_timeout_range() {
    broken_taskdef(
        "fargate/start-timeout",
        "containerDefinitions[0].startTimeout",
        |v| {
            container(v, 0)["startTimeout"] = json!(900);
        },
    );
}

#[test]
fn ephemeral_storage_range() {
    broken_taskdef(
        "fargate/ephemeral-storage",
        "ephemeralStorage.sizeInGiB",
        |v| {
            v["ephemeralStorage"] = json!({"sizeInGiB": 10});
        },
    );
}

#[test]
fn unsupported_linux_parameters() {
    broken_taskdef(
        "fargate/linux-parameters",
        "containerDefinitions[1].linuxParameters.sharedMemorySize",
        |v| {
            container(v, 1)["linuxParameters"] = json!({"sharedMemorySize": 64});
        },
    );
    broken_taskdef(
        "fargate/linux-parameters",
        "containerDefinitions[1].linuxParameters.capabilities.add[0]",
        |v| {
            container(v, 1)["linuxParameters"] = json!({"capabilities": {"add": ["NET_ADMIN"]}});
        },
    );
    broken_taskdef(
        "fargate/linux-parameters",
        "containerDefinitions[1].privileged",
        |v| {
            container(v, 1)["privileged"] = json!(true);
        },
    );
}

#[test]
fn container_resources_fit_the_task() {
    broken_taskdef("fargate/container-resources", "containerDefinitions", |v| {
        container(v, 1)["cpu"] = json!(1024);
    });
    broken_taskdef("fargate/container-resources", "containerDefinitions", |v| {
        container(v, 1)["memoryReservation"] = json!(2000);
    });
}

#[test]
fn requires_compatibilities_warns() {
    let mut v = assembly();
    v.as_object_mut().unwrap().remove("requiresCompatibilities");
    let f = lint(Kind::TaskDefinition, &v);
    assert!(
        f.iter().any(
            |x| x.rule == "fargate/requires-compatibilities" && x.severity == Severity::Warning
        )
    );
}

fn broken_service(rule: &str, path: &str, f: impl FnOnce(&mut Value)) {
    assert!(
        fired(Kind::Service, &service(), rule).is_empty(),
        "{rule} fires on the unbroken file"
    );
    let mut v = service();
    f(&mut v);
    let got = fired(Kind::Service, &v, rule);
    assert!(
        got.iter().any(|p| p == path),
        "expected {rule} at {path}, got {:#?}",
        lint(Kind::Service, &v)
    );
}

#[test]
fn service_rules() {
    broken_service("service/launch-type", "launchType", |v| {
        v["launchType"] = json!("EC2")
    });
    broken_service(
        "service/network",
        "networkConfiguration.awsvpcConfiguration.subnets",
        |v| {
            v["networkConfiguration"]["awsvpcConfiguration"]["subnets"] = json!([]);
        },
    );
    broken_service("service/desired-count", "desiredCount", |v| {
        v["desiredCount"] = json!(-1)
    });
    broken_service("service/task-definition", "taskDefinition", |v| {
        v["taskDefinition"] = json!("fargo-assembly:1")
    });
    broken_service(
        "service/load-balancer",
        "loadBalancers[0].containerPort",
        |v| {
            v["loadBalancers"][0]
                .as_object_mut()
                .unwrap()
                .remove("containerPort");
        },
    );
    broken_service(
        "service/deployment",
        "deploymentConfiguration.minimumHealthyPercent",
        |v| {
            v["deploymentConfiguration"]["minimumHealthyPercent"] = json!(250);
        },
    );
    broken_service("model/unknown-field", "desiredTasks", |v| {
        v["desiredTasks"] = json!(2)
    });
}

#[test]
fn service_load_balancer_must_hit_a_mapped_port() {
    let mut out = Vec::new();
    fargo::lint::service::check_against_taskdef(&service(), &assembly(), &mut out);
    assert!(out.is_empty(), "{out:#?}");
    let mut svc = service();
    svc["loadBalancers"][0]["containerPort"] = json!(50052);
    fargo::lint::service::check_against_taskdef(&svc, &assembly(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, "service/load-balancer-target");
    assert_eq!(out[0].path, "loadBalancers[0].containerPort");
    svc["loadBalancers"][0]["containerName"] = json!("coin");
    out.clear();
    fargo::lint::service::check_against_taskdef(&svc, &assembly(), &mut out);
    assert_eq!(out[0].path, "loadBalancers[0].containerName");
}

#[test]
fn scaling_file_is_the_issue_s_policy() {
    let s = fargo::lint::scaling::parse(&scaling()).unwrap();
    assert_eq!((s.min_capacity, s.max_capacity), (2, 4));
    let p = &s.target_tracking[0];
    assert_eq!(p.predefined_metric_type, "ECSServiceAverageCPUUtilization");
    assert_eq!(p.target_value, 75.0);
    assert_eq!(
        (p.scale_in_cooldown, p.scale_out_cooldown),
        (Some(60), Some(60))
    );
    assert_eq!(service()["desiredCount"], 2);
    assert_eq!(service()["loadBalancers"][0]["containerName"], "auth-proxy");
    assert_eq!(service()["loadBalancers"][0]["containerPort"], 50051);
}

fn broken_scaling(rule: &str, path: &str, f: impl FnOnce(&mut Value)) {
    assert!(fired(Kind::Scaling, &scaling(), rule).is_empty());
    let mut v = scaling();
    f(&mut v);
    let got = fired(Kind::Scaling, &v, rule);
    assert!(
        got.iter().any(|p| p == path),
        "expected {rule} at {path}, got {:#?}",
        lint(Kind::Scaling, &v)
    );
}

#[test]
fn scaling_rules() {
    broken_scaling("scaling/schema", "(top level)", |v| {
        v["maxTasks"] = json!(4)
    });
    broken_scaling("scaling/capacity", "minCapacity", |v| {
        v["minCapacity"] = json!(5)
    });
    broken_scaling(
        "scaling/metric",
        "targetTracking[0].predefinedMetricType",
        |v| {
            v["targetTracking"][0]["predefinedMetricType"] = json!("CPU");
        },
    );
    broken_scaling(
        "scaling/target-value",
        "targetTracking[0].targetValue",
        |v| {
            v["targetTracking"][0]["targetValue"] = json!(175.0);
        },
    );
    broken_scaling(
        "scaling/cooldown",
        "targetTracking[0].scaleInCooldown",
        |v| {
            v["targetTracking"][0]["scaleInCooldown"] = json!(-5);
        },
    );
}

const BOTOCORE_CHECK: &str = r#"
import json, sys
import botocore.session
from botocore.validate import ParamValidator
model = botocore.session.get_session().get_service_model("ecs")
shape = model.operation_model(sys.argv[1]).input_shape
report = ParamValidator().validate(json.load(open(sys.argv[2])), shape)
print(report.generate_report())
sys.exit(1 if report.has_errors() else 0)
"#;

fn botocore(op: &str, v: &Value) -> (bool, String) {
    let dir = tempdir();
    let f = dir.join("body.json");
    std::fs::write(&f, serde_json::to_string(v).unwrap()).unwrap();
    let out = Command::new("python3")
        .args(["-c", BOTOCORE_CHECK, op])
        .arg(&f)
        .output()
        .expect("python3 with botocore (pip install botocore)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fargo-lint-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// botocore's own validator (the model the SDKs are generated from) accepts the rendered
/// files and rejects the same breaks the vendored model reports, at the same field.
#[test]
fn botocore_param_validator_agrees() {
    let vars = Vars::from_env_file(&repo().join("taskdefs/envs/dev.yaml")).unwrap();
    let td = render_value(&assembly(), &vars, "assembly.json").unwrap();
    let (ok, report) = botocore("RegisterTaskDefinition", &td);
    assert!(ok, "botocore rejects taskdefs/assembly.json: {report}");
    let mut svc = render_value(&service(), &vars, "assembly.service.json").unwrap();
    svc["taskDefinition"] = json!("fargo-assembly:1");
    let (ok, report) = botocore("CreateService", &svc);
    assert!(
        ok,
        "botocore rejects taskdefs/assembly.service.json: {report}"
    );

    let mut bad = td.clone();
    bad["containerDefinitions"][3]["portMappings"][0]["containerPort"] = json!("50051");
    bad["containerDefinitions"][0]["stopTimeOut"] = json!(30);
    bad.as_object_mut().unwrap().remove("family");
    let (ok, report) = botocore("RegisterTaskDefinition", &bad);
    assert!(!ok);
    assert!(
        report.contains("containerDefinitions[3].portMappings[0].containerPort"),
        "{report}"
    );
    assert!(report.contains("stopTimeOut"), "{report}");
    assert!(report.contains("family"), "{report}");
    let ours = lint(Kind::TaskDefinition, &bad);
    for (rule, path) in [
        (
            "model/type",
            "containerDefinitions[3].portMappings[0].containerPort",
        ),
        ("model/unknown-field", "containerDefinitions[0].stopTimeOut"),
        ("model/required", "family"),
    ] {
        assert!(
            ours.iter().any(|f| f.rule == rule && f.path == path),
            "{rule} {path}: {ours:#?}"
        );
    }
}

#[test]
fn cli_exit_codes_and_one_line_errors() {
    let bin = env!("CARGO_BIN_EXE_fargo");
    let ok = Command::new(bin)
        .arg("lint")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("0 error(s)"));

    let dir = tempdir();
    let mut v = assembly();
    container(&mut v, 0)["stopTimeout"] = json!(300);
    let f = dir.join("broken.json");
    std::fs::write(&f, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let out = Command::new(bin).arg("lint").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("broken.json: error[fargate/stop-timeout] containerDefinitions[0].stopTimeout: 300 s; Fargate allows 0 to 120 s"),
        "{text}"
    );

    let m = dir.join("malformed.json");
    std::fs::write(&m, "{\"family\": \"x\",\n \"cpu\": }").unwrap();
    let out = Command::new(bin).arg("render").arg(&m).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("malformed.json: malformed JSON: expected value at line 2"),
        "{err}"
    );

    let out = Command::new(bin)
        .args(["render", "taskdefs/assembly.json", "--set", "ACCOUNT_ID=1"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "taskdefs/assembly.json: unfilled placeholders: EXECUTION_ROLE (executionRoleArn)"
        ),
        "{err}"
    );

    let out = Command::new(bin)
        .args([
            "render",
            "taskdefs/assembly.json",
            "-e",
            "dev",
            "--set",
            "IMAGE_TAG=v9",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rendered["containerDefinitions"][3]["image"],
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/fargo-auth-proxy:v9"
    );
}

#[test]
fn eventbridge_bodies_keep_their_shape() {
    let rule: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("taskdefs/thumbnail-job.rule.json")).unwrap(),
    )
    .unwrap();
    let targets: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("taskdefs/thumbnail-job.targets.json")).unwrap(),
    )
    .unwrap();
    assert!(lint(Kind::Events, &rule).is_empty());
    assert!(lint(Kind::Events, &targets).is_empty());
    let mut r = rule.clone();
    r.as_object_mut().unwrap().remove("EventPattern");
    assert!(fired(Kind::Events, &r, "events/schema").contains(&"EventPattern".to_owned()));
    let mut t = targets.clone();
    t["Targets"][0]["EcsParameters"]["NetworkConfiguration"]["awsvpcConfiguration"]["Subnets"] =
        json!([]);
    assert!(fired(Kind::Events, &t, "events/schema").contains(
        &"Targets[0].EcsParameters.NetworkConfiguration.awsvpcConfiguration.Subnets".to_owned()
    ));
}
