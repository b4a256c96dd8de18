//! The deploy commands against a real moto server, through the real AWS SDK: the `fargo`
//! binary does the work (as a person would run it) and an SDK client checks what it did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_credential_types::Credentials;
use fargo::aws::{AwsArgs, Clients};
use fargo_testkit::Moto;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Steers moto through its `/moto-api` (e.g. how task states progress).
fn moto_api(moto: &Moto, path: &str, body: &Value) {
    let body = body.to_string();
    let req = format!(
        "POST /moto-api/{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        moto.port,
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 2") || resp.starts_with("HTTP/1.0 2"),
        "{resp}"
    );
}

struct Env {
    moto: Moto,
    dir: PathBuf,
}

impl Env {
    fn start(moto_env: &[(&str, &str)]) -> Env {
        let moto = Moto::start_with_env(moto_env);
        let dir =
            std::env::temp_dir().join(format!("fargo-deploy-{}-{}", std::process::id(), moto.port));
        std::fs::create_dir_all(&dir).unwrap();
        let subnets = moto.ec2_ids("DescribeSubnets", "subnetId");
        let groups = moto.ec2_ids("DescribeSecurityGroups", "groupId");
        assert!(
            !subnets.is_empty() && !groups.is_empty(),
            "moto has no default VPC"
        );
        let env = format!(
            "ACCOUNT_ID: \"123456789012\"\nIMAGE_REPO: 123456789012.dkr.ecr.us-east-1.amazonaws.com\nIMAGE_TAG: v1\n\
             EXECUTION_ROLE: exec\nTASK_ROLE: task\nLOG_GROUP: /ecs/fargo-test\nCLUSTER: fargo-test\n\
             SUBNETS: [{}]\nSECURITY_GROUPS: [{}]\n\
             TARGET_GROUP_ARN: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/fargo-grpc/0123456789abcdef\n",
            subnets[..2].join(", "),
            groups[0]
        );
        std::fs::write(dir.join("test.yaml"), env).unwrap();
        Env { moto, dir }
    }

    /// Runs `fargo ARGS` with the environment's values and moto as the AWS endpoint.
    fn fargo(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fargo"));
        cmd.args(args).current_dir(repo());
        for (k, v) in self.moto.aws_env() {
            cmd.env(k, v);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.output().unwrap()
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        let envs = self.dir.display().to_string();
        let mut args = vec![
            "deploy",
            "-e",
            "test",
            "--envs-dir",
            &envs,
            "--poll",
            "200ms",
        ];
        args.extend_from_slice(extra);
        self.fargo(&args)
    }

    async fn clients(&self) -> Clients {
        let args = AwsArgs {
            endpoint_url: Some(self.moto.endpoint()),
            region: Some("us-east-1".into()),
        };
        Clients::load_with(
            &args,
            Some(Credentials::new("testing", "testing", None, None, "test")),
        )
        .await
        .unwrap()
    }
}

fn ok(out: &Output) -> (String, String) {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {o}\nstderr: {e}",
        out.status.code()
    );
    (o, e)
}

fn failed(out: &Output) -> String {
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {e}",
        String::from_utf8_lossy(&out.stdout)
    );
    e.lines().last().unwrap_or("").to_owned()
}

async fn service_td(c: &Clients) -> String {
    let out = c
        .ecs
        .describe_services()
        .cluster("fargo-test")
        .services("fargo-assembly")
        .send()
        .await
        .unwrap();
    out.services()[0]
        .task_definition()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_creates_updates_scales_and_reports() {
    let env = Env::start(&[("MOTO_ECS_SERVICE_RUNNING", "2")]);
    let envs = env.dir.display().to_string();

    let (out, err) = ok(&env.deploy(&[]));
    assert!(
        out.contains("deployed fargo-assembly:1: running 2/2"),
        "{out}"
    );
    for step in [
        "created cluster fargo-test",
        "created log group /ecs/fargo-test",
        "registered fargo-assembly:1",
        "created service fargo-assembly on fargo-test with fargo-assembly:1",
        "scalable target service/fargo-test/fargo-assembly: 2..4 tasks",
        "scaling policy fargo-assembly-cpu75: ECSServiceAverageCPUUtilization at 75",
    ] {
        assert!(err.contains(step), "missing `{step}` in {err}");
    }

    let c = env.clients().await;
    let svc = c
        .ecs
        .describe_services()
        .cluster("fargo-test")
        .services("fargo-assembly")
        .send()
        .await
        .unwrap();
    let svc = &svc.services()[0];
    assert_eq!(svc.desired_count(), 2);
    assert_eq!(svc.launch_type().unwrap().as_str(), "FARGATE");
    let lb = &svc.load_balancers()[0];
    assert_eq!(
        (lb.container_name(), lb.container_port()),
        (Some("auth-proxy"), Some(50051))
    );
    let td = c
        .ecs
        .describe_task_definition()
        .task_definition("fargo-assembly:1")
        .send()
        .await
        .unwrap();
    let td = td.task_definition().unwrap();
    assert_eq!(td.container_definitions().len(), 4);
    assert_eq!(
        td.container_definitions()[3].image(),
        Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/fargo-auth-proxy:v1")
    );
    assert_eq!(
        td.execution_role_arn(),
        Some("arn:aws:iam::123456789012:role/exec")
    );
    let groups = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/ecs/fargo-test")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups().len(), 1);
    use aws_sdk_applicationautoscaling::types::ServiceNamespace;
    let t = c
        .scaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    let t = &t.scalable_targets()[0];
    assert_eq!(
        (t.resource_id(), t.min_capacity(), t.max_capacity()),
        ("service/fargo-test/fargo-assembly", 2, 4)
    );
    let p = c
        .scaling
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    let conf = p.scaling_policies()[0]
        .target_tracking_scaling_policy_configuration()
        .unwrap();
    assert_eq!(conf.target_value(), 75.0);
    assert_eq!(
        (conf.scale_in_cooldown(), conf.scale_out_cooldown()),
        (Some(60), Some(60))
    );

    // Nothing changed: diff says so, and deploy reuses the revision.
    let (out, _) = ok(&env.fargo(&["diff", "-e", "test", "--envs-dir", &envs]));
    assert!(
        out.contains("task definition: no changes against fargo-assembly:1"),
        "{out}"
    );
    // moto keeps no deploymentConfiguration, healthCheckGracePeriodSeconds or
    // enableECSManagedTags, so only those may show; everything it keeps matches.
    for line in out.lines().filter(|l| l.starts_with("  ")) {
        assert!(
            [
                "deploymentConfiguration",
                "healthCheckGracePeriodSeconds",
                "enableECSManagedTags"
            ]
            .iter()
            .any(|f| line.contains(f)),
            "unexpected change {line} in {out}"
        );
    }
    let (out, err) = ok(&env.deploy(&[]));
    assert!(
        err.contains("task definition unchanged, reusing fargo-assembly:1"),
        "{err}"
    );
    assert!(out.contains("deployed fargo-assembly:1"), "{out}");

    // A new image tag: diff names the containers, deploy registers :2 and updates.
    let (out, _) = ok(&env.fargo(&[
        "diff",
        "-e",
        "test",
        "--envs-dir",
        &envs,
        "--set",
        "IMAGE_TAG=v2",
    ]));
    assert!(
        out.contains("task definition: 4 change(s) against fargo-assembly:1"),
        "{out}"
    );
    assert!(
        out.contains("~ containerDefinitions[auth-proxy].image: \"123456789012.dkr.ecr.us-east-1.amazonaws.com/fargo-auth-proxy:v1\" -> \"123456789012.dkr.ecr.us-east-1.amazonaws.com/fargo-auth-proxy:v2\""),
        "{out}"
    );
    let (out, err) = ok(&env.deploy(&["--set", "IMAGE_TAG=v2"]));
    assert!(err.contains("registered fargo-assembly:2"), "{err}");
    assert!(
        err.contains("updated service fargo-assembly to fargo-assembly:2"),
        "{err}"
    );
    assert!(
        err.contains(
            "not sent on update (creation-only or owned by auto scaling): desiredCount, launchType"
        ),
        "{err}"
    );
    assert!(out.contains("deployed fargo-assembly:2"), "{out}");
    assert_eq!(service_td(&c).await, "fargo-assembly:2");

    let (out, _) = ok(&env.fargo(&[
        "status",
        "-e",
        "test",
        "--envs-dir",
        &envs,
        "--set",
        "IMAGE_TAG=v2",
    ]));
    assert!(
        out.contains(
            "service fargo-assembly on fargo-test: ACTIVE fargo-assembly:2, desired 2, running 2"
        ),
        "{out}"
    );
    assert!(out.contains("scaling: 2..4 tasks; policies: fargo-assembly-cpu75 (ECSServiceAverageCPUUtilization at 75)"), "{out}");
    assert!(out.contains("deployments:\n  PRIMARY ecs-svc/"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_never_settles_is_rolled_back() {
    // moto's services then never run a task: every rollout stays IN_PROGRESS.
    let env = Env::start(&[("MOTO_ECS_SERVICE_RUNNING", "0")]);
    let (out, _) = ok(&env.deploy(&["--no-wait"]));
    assert!(
        out.contains("deployed fargo-assembly:1 (not waiting for the rollout)"),
        "{out}"
    );
    let err = failed(&env.deploy(&["--set", "IMAGE_TAG=broken", "--timeout", "1s"]));
    assert!(
        err.starts_with("fargo: deployment of fargo-assembly:2 failed: not settled after 1s (running 0/2, pending 2, 1 deployment(s), rollout IN_PROGRESS); rolled back to fargo-assembly:1"),
        "{err}"
    );
    let c = env.clients().await;
    assert_eq!(service_td(&c).await, "fargo-assembly:1");
}

fn job_taskdef(dir: &Path) -> PathBuf {
    // The job container first: moto reports only the first container of a task.
    let td = json!({
        "family": "fargo-thumbnail-job-test",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "512",
        "memory": "1024",
        "executionRoleArn": "arn:aws:iam::${ACCOUNT_ID}:role/${EXECUTION_ROLE}",
        "containerDefinitions": [
            {"name": "job", "image": "${IMAGE_REPO}/fargo-thumbnail:${IMAGE_TAG}", "essential": true,
             "memoryReservation": 512, "command": ["job"], "dependsOn": [{"containerName": "logging", "condition": "HEALTHY"}]},
            {"name": "logging", "image": "${IMAGE_REPO}/fargo-logging:${IMAGE_TAG}", "essential": false,
             "memoryReservation": 64, "healthCheck": {"command": ["CMD", "/usr/local/bin/logging", "healthcheck"]}}
        ]
    });
    let p = dir.join("job.json");
    std::fs::write(&p, serde_json::to_string_pretty(&td).unwrap()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn run_task_waits_and_exits_with_the_job_containers_code() {
    let env = Env::start(&[]);
    let envs = env.dir.display().to_string();
    let job = job_taskdef(&env.dir).display().to_string();
    let c = env.clients().await;
    c.ecs
        .create_cluster()
        .cluster_name("fargo-test")
        .send()
        .await
        .unwrap();
    // Tasks step through their states one DescribeTasks at a time, so the wait is real.
    moto_api(
        &env.moto,
        "state-manager/set-transition",
        &json!({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1}}),
    );
    let common = [
        "run-task",
        "-e",
        "test",
        "--envs-dir",
        &envs,
        "--taskdef",
        &job,
        "--poll",
        "100ms",
    ];

    let mut args = common.to_vec();
    args.extend(["--container", "nope"]);
    let err = failed(&env.fargo(&args));
    assert!(
        err.starts_with("fargo: --container nope: no such container in fargo-thumbnail-job-test:1 (containers: job, logging)"),
        "{err}"
    );
    let listed = c
        .ecs
        .list_tasks()
        .cluster("fargo-test")
        .send()
        .await
        .unwrap();
    assert!(
        listed.task_arns().is_empty(),
        "a task was started despite the bad override"
    );

    let mut args = common.to_vec();
    args.extend([
        "--container",
        "job",
        "--env-var",
        "FARGO_JOB__AT=2s",
        "--client-token",
        "test-token-1",
        "--",
        "job",
        "--input",
        "s3://in/clip.mp4",
    ]);
    let out = env.fargo(&args);
    let (_, err) = ok(&out);
    assert_eq!(out.status.code(), Some(0));
    for s in ["RUNNING", "DEACTIVATING", "STOPPED", "job exited with 0"] {
        assert!(err.contains(s), "missing {s} in {err}");
    }
    // The reused registration and the overrides ECS received.
    assert!(
        !err.contains("registered fargo-thumbnail-job-test:2"),
        "{err}"
    );
    let listed = c
        .ecs
        .list_tasks()
        .cluster("fargo-test")
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    let all = if listed.task_arns().is_empty() {
        c.ecs
            .list_tasks()
            .cluster("fargo-test")
            .send()
            .await
            .unwrap()
            .task_arns()
            .to_vec()
    } else {
        listed.task_arns().to_vec()
    };
    let tasks = c
        .ecs
        .describe_tasks()
        .cluster("fargo-test")
        .set_tasks(Some(all))
        .send()
        .await
        .unwrap();
    assert_eq!(tasks.tasks().len(), 1);
    let ov = &tasks.tasks()[0].overrides().unwrap().container_overrides()[0];
    assert_eq!(ov.name(), Some("job"));
    assert_eq!(ov.command(), ["job", "--input", "s3://in/clip.mp4"]);
    assert_eq!(ov.environment()[0].name(), Some("FARGO_JOB__AT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_one_line_and_applies_nothing() {
    let env = Env::start(&[]);
    let c = env.clients().await;

    // An unfilled placeholder: stopped before any call.
    let err = failed(&env.fargo(&["deploy", "--set", "ACCOUNT_ID=1"]));
    assert!(
        err.starts_with("fargo: taskdefs/assembly.json: unfilled placeholders: "),
        "{err}"
    );
    assert!(
        c.ecs
            .list_clusters()
            .send()
            .await
            .unwrap()
            .cluster_arns()
            .is_empty()
    );

    // A lint error after rendering: nothing applied either.
    let envs = env.dir.display().to_string();
    let bad = env.dir.join("bad.json");
    let mut td: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("taskdefs/assembly.json")).unwrap(),
    )
    .unwrap();
    td["memory"] = json!("3000");
    std::fs::write(&bad, td.to_string()).unwrap();
    let bad_s = bad.display().to_string();
    let err = failed(&env.deploy(&["--taskdef", &bad_s]));
    assert!(
        err.contains(
            "bad.json: 1 lint error(s), nothing applied: error[fargate/cpu-memory] memory"
        ),
        "{err}"
    );
    assert!(
        c.ecs
            .list_clusters()
            .send()
            .await
            .unwrap()
            .cluster_arns()
            .is_empty()
    );

    // The service call fails (unknown subnet): the error says what was already done.
    let err = failed(&env.fargo(&[
        "deploy",
        "-e",
        "test",
        "--envs-dir",
        &envs,
        "--set",
        "SUBNETS=[subnet-00000000000000000]",
    ]));
    assert!(
        err.starts_with("fargo: CreateService: InvalidParameterException: "),
        "{err}"
    );
    assert!(
        err.ends_with("(already applied: created cluster fargo-test, created log group /ecs/fargo-test, registered fargo-assembly:1)"),
        "{err}"
    );

    // Missing credentials: named before any call.
    let out = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args([
            "status",
            "-e",
            "test",
            "--envs-dir",
            &envs,
            "--region",
            "us-east-1",
            "--endpoint-url",
            &env.moto.endpoint(),
        ])
        .current_dir(repo())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(err.starts_with("fargo: no AWS credentials:"), "{err}");

    // An unreachable endpoint: the call is named, one line.
    let port = fargo_testkit::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args([
            "deploy",
            "-e",
            "test",
            "--envs-dir",
            &envs,
            "--endpoint-url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .current_dir(repo())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let err = failed(&out);
    assert!(
        err.starts_with("fargo: DescribeClusters: endpoint unreachable: "),
        "{err}"
    );
    assert!(err.ends_with("(nothing was applied)"), "{err}");
}
