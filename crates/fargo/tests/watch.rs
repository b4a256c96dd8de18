//! The local invoker: one job per new video, a failing job reported with its exit
//! code and reason, nothing launched twice (also across restarts, via the state file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn make_video(path: &Path, seconds: u32) {
    let s = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=160x120:rate=25:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(path)
        .status()
        .expect("ffmpeg CLI missing: apt-get install ffmpeg");
    assert!(s.success());
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
