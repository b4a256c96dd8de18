//! The local invoker: one job per new video, a failing job reported with its exit
//! code and reason, nothing launched twice (also across restarts, via the state file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn make_video(path: &Path, seconds: u32) {
    fargo_testkit::h264_clip(path, "160x120", seconds, 250).unwrap();
}

fn watch_once(input: &Path, output: &Path, state: &Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args(["watch", "--once", "--at", "1"])
        .arg(input)
        .arg("-o")
        .arg(output)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn local_invoker_launches_once_per_video_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, state) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("state"),
    );
    std::fs::create_dir_all(&input).unwrap();
    make_video(&input.join("a.mp4"), 2);
    make_video(&input.join("b.mp4"), 2);
    std::fs::write(input.join("broken.mp4"), b"not a video at all").unwrap();
    std::fs::write(input.join("notes.txt"), b"ignored: not a video name").unwrap();

    let (code, out, err) = watch_once(&input, &output, &state);
    assert_eq!(code, 1, "a failed job makes --once fail: {out}{err}");
    assert!(err.contains("3 launched, 1 failed"), "{err}");
    assert!(output.join("a.png").is_file() && output.join("b.png").is_file());
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(
        failed[0].contains("broken.mp4") && failed[0].contains("exit 3"),
        "{}",
        failed[0]
    );
    assert!(
        failed[0].contains("not a video file"),
        "the job's reason is reported: {}",
        failed[0]
    );

    // Nothing new: nothing launched, even though this is a new process.
    let (code, out, err) = watch_once(&input, &output, &state);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("0 launched"), "{err}");

    // One new video: exactly one job.
    make_video(&input.join("c.mp4"), 2);
    let (code, out, err) = watch_once(&input, &output, &state);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("1 launched, 0 failed"), "{err}");
    assert!(output.join("c.png").is_file());
}

/// The EventBridge target fills the job's environment contract from the S3 event.
#[test]
fn eventbridge_target_fills_the_job_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../taskdefs");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(f)).unwrap()).unwrap()
    };
    let job = read("thumbnail-job.json");
    let container = &job["containerDefinitions"][0];
    assert_eq!(container["name"], "thumbnail-job");
    assert_eq!(container["command"][0], "job");
    let rule = read("thumbnail-job.rule.json");
    let pattern: serde_json::Value =
        serde_json::from_str(rule["EventPattern"].as_str().unwrap()).unwrap();
    assert_eq!(pattern["detail-type"][0], "Object Created");
    let targets = read("thumbnail-job.targets.json");
    let t = &targets["Targets"][0];
    assert_eq!(targets["Rule"], rule["Name"]);
    let tr = &t["InputTransformer"];
    // What EventBridge sends for s3://in/videos/a.mp4 after substitution.
    let filled = tr["InputTemplate"]
        .as_str()
        .unwrap()
        .replace("<bucket>", "in")
        .replace("<key>", "videos/a.mp4");
    let overrides: serde_json::Value = serde_json::from_str(&filled).unwrap();
    let c = &overrides["containerOverrides"][0];
    assert_eq!(c["name"], container["name"]);
    let mut env: Vec<(String, String)> = c["environment"]
        .as_array()
        .unwrap()
        .iter()
        .chain(container["environment"].as_array().unwrap())
        .map(|kv| {
            (
                kv["name"].as_str().unwrap().to_owned(),
                kv["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    env.sort();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for needed in [
        "INPUT_VIDEO_FILE_URL",
        "OUTPUT_S3_PATH",
        "OUTPUT_THUMBS_FILE_NAME",
        "POSITION_TIME_DURATION",
    ] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    assert!(env.contains(&("INPUT_VIDEO_FILE_URL".into(), "s3://in/videos/a.mp4".into())));
    assert_eq!(tr["InputPathsMap"]["key"], "$.detail.object.key");
}

/// `fargo thumb` streams a local file up to a running thumbnail service.
#[test]
fn thumb_streams_a_local_file_to_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("v.mp4");
    make_video(&video, 2);
    let port = fargo_testkit::free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args(["sidecar", "thumbnail", "serve"])
        .env("FARGO_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    assert!(fargo_testkit::wait_for_port(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(20)
    ));
    let out = dir.path().join("t.jpg");
    let o = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args([
            "thumb",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--at",
            "1.5",
            "-o",
        ])
        .arg(&out)
        .arg(&video)
        .output()
        .unwrap();
    let missing = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args([
            "thumb",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--at",
            "9",
            "-o",
        ])
        .arg(dir.path().join("x.png"))
        .arg(&video)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        &bytes[..2],
        &[0xff, 0xd8],
        "a JPEG, from the output's extension"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("160x120"));
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("past the end"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

fn upload(
    rt: &tokio::runtime::Runtime,
    storage: &fargo_runtime::storage::Storage,
    uri: &str,
    path: &Path,
) {
    rt.block_on(storage.write(uri, std::fs::read(path).unwrap().into()))
        .unwrap();
}

/// Waits (generously: the machine is shared) for `cond`, polling.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `fargo watch` on an S3 prefix (moto), local backend: each object dropped under the
/// prefix gets exactly one job, and its thumbnail appears under the output prefix.
#[test]
fn s3_prefix_watch_launches_one_job_per_object() {
    use std::io::BufRead;
    let moto = fargo_testkit::Moto::start();
    moto.create_buckets(&["videos", "thumbs"]);
    let env = moto.aws_env_owned();
    let storage = fargo_runtime::storage::Storage::with_env(env.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("v.mp4");
    make_video(&video, 2);

    let mut watcher = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args(["watch", "s3://videos/incoming/", "-o", "s3://thumbs/out"])
        .args(["--at", "1", "--interval", "200ms"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stdout) = (lines.clone(), watcher.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                lines.lock().unwrap().push(l);
            }
        })
    };
    let exists = |uri: &str| rt.block_on(storage.head(uri)).is_ok();
    let reported = |name: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("ok\t") && l.contains(name))
    };

    upload(&rt, &storage, "s3://videos/incoming/a.mp4", &video);
    wait_until("s3://thumbs/out/a.png", || exists("s3://thumbs/out/a.png"));
    // While a.mp4 stays, more scans pass: b.mp4 and a non-video arrive later.
    upload(&rt, &storage, "s3://videos/incoming/notes.txt", &video);
    upload(&rt, &storage, "s3://videos/incoming/b.mp4", &video);
    wait_until("both jobs reported", || {
        reported("incoming/a.mp4") && reported("incoming/b.mp4")
    });
    assert!(exists("s3://thumbs/out/b.png"));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let _ = reader.join();
    let lines = lines.lock().unwrap().clone();
    for name in ["incoming/a.mp4", "incoming/b.mp4"] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(name)).count(),
            1,
            "one job for {name}: {lines:?}"
        );
    }
    assert!(!lines.iter().any(|l| l.contains("notes.txt")), "{lines:?}");
    let png = rt
        .block_on(storage.read_all("s3://thumbs/out/a.png", 10 << 20))
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

/// The RunTask bodies moto recorded (its recorder writes one JSON line per request).
fn recorded_run_tasks(recording: &Path) -> Vec<serde_json::Value> {
    let script = "import json,sys,base64\n\
        out=[]\n\
        for l in open(sys.argv[1]):\n\
        \x20   e=json.loads(l)\n\
        \x20   t=e['headers'].get('X-Amz-Target') or e['headers'].get('x-amz-target') or ''\n\
        \x20   if t.endswith('.RunTask'):\n\
        \x20       b=e['body']\n\
        \x20       out.append(json.loads(base64.b64decode(b) if e.get('body_encoded') else b))\n\
        print(json.dumps(out))";
    if !recording.exists() {
        return Vec::new();
    }
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(recording)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The ECS backend against moto: one RunTask per new S3 object, whose container
/// overrides carry the job's environment contract and whose client token is the
/// object's (key, ETag) token; the task's exit is reported; nothing runs twice.
#[test]
fn ecs_backend_sends_one_run_task_with_the_job_contract() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("moto-recording");
    let rec = recording.display().to_string();
    let moto = fargo_testkit::Moto::start_with_env(&[
        ("MOTO_ENABLE_RECORDING", "True"),
        ("MOTO_RECORDER_FILEPATH", &rec),
    ]);
    moto.create_buckets(&["videos"]);
    let env = moto.aws_env_owned();
    let storage = fargo_runtime::storage::Storage::with_env(env.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let video = dir.path().join("v.mp4");
    make_video(&video, 1);
    upload(&rt, &storage, "s3://videos/incoming/a.mp4", &video);
    let etag = rt
        .block_on(storage.head("s3://videos/incoming/a.mp4"))
        .unwrap()
        .etag
        .unwrap();

    let clients = rt
        .block_on(fargo::aws::Clients::load_with(
            &fargo::aws::AwsArgs {
                endpoint_url: Some(moto.endpoint()),
                region: Some("us-east-1".into()),
            },
            Some(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            )),
        ))
        .unwrap();
    rt.block_on(
        clients
            .ecs
            .create_cluster()
            .cluster_name("fargo-test")
            .send(),
    )
    .unwrap();
    rt.block_on(
        clients
            .ecs
            .register_task_definition()
            .family("fargo-thumbnail-job")
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
            .cpu("256")
            .memory("512")
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("thumbnail-job")
                    .image("fargo-thumbnail:test")
                    .essential(true)
                    .memory(512)
                    .command("job")
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let subnets = moto.ec2_ids("DescribeSubnets", "subnetId");
    let groups = moto.ec2_ids("DescribeSecurityGroups", "groupId");
    let (subnet_arg, group_arg) = (subnets[..2].join(","), groups[0].clone());
    let state = dir.path().join("state");
    let watch = || {
        Command::new(env!("CARGO_BIN_EXE_fargo"))
            .args(["watch", "s3://videos/incoming/", "-o", "s3://thumbs/out"])
            .args(["--at", "00:00:00.5", "--once", "--backend", "ecs"])
            .args(["--cluster", "fargo-test", "--poll", "100ms"])
            .args(["--subnets", &subnet_arg, "--security-groups", &group_arg])
            .arg("--state")
            .arg(&state)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    };
    let o = watch();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.contains("1 launched, 0 failed"), "{err}");
    assert!(
        out.starts_with("ok\ts3://videos/incoming/a.mp4\ts3://thumbs/out/a.png\t(arn:aws:ecs:"),
        "{out}"
    );

    let calls = recorded_run_tasks(&recording);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(c["cluster"], "fargo-test");
    assert_eq!(c["taskDefinition"], "fargo-thumbnail-job");
    assert_eq!(c["launchType"], "FARGATE");
    assert_eq!(c["count"], 1);
    assert_eq!(c["startedBy"], "fargo-watch");
    assert_eq!(
        c["clientToken"],
        fargo::invoker::token("s3://videos/incoming/a.mp4", &etag)
    );
    let net = &c["networkConfiguration"]["awsvpcConfiguration"];
    assert_eq!(net["subnets"], serde_json::json!(subnets[..2]));
    assert_eq!(net["securityGroups"], serde_json::json!([groups[0]]));
    let ov = &c["overrides"]["containerOverrides"][0];
    assert_eq!(ov["name"], "thumbnail-job");
    let mut env_vars: Vec<(String, String)> = ov["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            (
                kv["name"].as_str().unwrap().to_owned(),
                kv["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    env_vars.sort();
    let expected: Vec<(String, String)> = [
        ("INPUT_VIDEO_FILE_URL", "s3://videos/incoming/a.mp4"),
        ("OUTPUT_S3_PATH", "s3://thumbs/out"),
        ("OUTPUT_THUMBS_FILE_NAME", "a.png"),
        ("POSITION_TIME_DURATION", "00:00:00.5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env_vars, expected);

    // The same object again (a restart, the state file): no second RunTask.
    let o = watch();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("0 launched"), "{err}");
    assert_eq!(recorded_run_tasks(&recording).len(), 1);
}
