//! The assembly under Compose, against the real Docker engine: the images that
//! `docker/build-images.sh` built, `docker-compose.yml` as committed, gRPC through the
//! published auth-proxy port, the logging sidecar's output, a clean `down`, and one
//! on-demand job container per dropped video. Run by `docker/e2e.sh` (ignored otherwise:
//! it needs the images built first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fargo_docker_e2e::{Checks, Stack, engine, eventually, inspect, logs, records, run};
use fargo_proto::coinvalue::v1::CountRequest;
use fargo_proto::coinvalue::v1::coin_value_service_client::CoinValueServiceClient;
use fargo_proto::coinvalue::v1::count_request::Image;
use fargo_proto::thumbnail::v1::thumbnail_service_client::ThumbnailServiceClient;
use fargo_proto::thumbnail::v1::{ExtractOptions, ImageFormat, UploadChunk};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const SERVICES: [&str; 4] = ["logging", "thumbnail", "coin-value", "auth-proxy"];
/// The API key the test calls with; the auth-proxy gets its hash (see `overrides`).
const API_KEY: &str = "fargo-e2e-key-3f9a1c";

/// `sha256:<hex>` of `key`, the form the auth-proxy stores keys in (coreutils' sha256sum).
fn key_hash(key: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", hex.split_whitespace().next().unwrap())
}

/// The local credentials, the way a user adds theirs: a Compose override file giving the
/// auth-proxy one API key (principal `e2e`) allowed to call every method.
fn overrides(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("docker-compose.e2e.yml");
    std::fs::write(
        &path,
        format!(
            "services:\n  auth-proxy:\n    environment:\n      \
             FARGO_API_KEYS__E2E__HASH: '{}'\n      \
             FARGO_ACCESS__E2E__PRINCIPALS: e2e\n      \
             FARGO_ACCESS__E2E__METHODS: '*'\n",
            key_hash(API_KEY)
        ),
    )
    .unwrap();
    path
}

fn image_name(service: &str) -> String {
    format!(
        "{}/fargo-{service}:{}",
        std::env::var("IMAGE_REPO").unwrap_or_else(|_| "fargo".into()),
        std::env::var("IMAGE_TAG").unwrap_or_else(|_| "dev".into())
    )
}

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(API_KEY));
    req
}

async fn thumbnail_call(channel: Channel, video: &[u8]) -> Result<String, String> {
    let mut chunks = vec![UploadChunk {
        options: Some(ExtractOptions {
            positions: vec!["1".into()],
            format: ImageFormat::Png as i32,
            ..Default::default()
        }),
        data: Vec::new(),
    }];
    chunks.extend(video.chunks(64 * 1024).map(|c| UploadChunk {
        options: None,
        data: c.to_vec(),
    }));
    let resp = ThumbnailServiceClient::new(channel)
        .extract_upload(authed(tokio_stream::iter(chunks)))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let thumb = resp
        .thumbnails
        .first()
        .ok_or("the response holds no thumbnail")?;
    let img = image::load_from_memory(&thumb.image)
        .map_err(|e| format!("the thumbnail does not decode: {e}"))?;
    if (img.width(), img.height()) != (320, 240) {
        return Err(format!(
            "thumbnail is {}x{}, the video 320x240",
            img.width(),
            img.height()
        ));
    }
    Ok(format!(
        "{} thumbnail(s), PNG {}x{} decoded, frame at {:.2}s",
        resp.thumbnails.len(),
        img.width(),
        img.height(),
        thumb.frame_time_seconds
    ))
}

async fn coin_call(channel: Channel) -> Result<String, String> {
    // The first deterministic scene with a few coins: a total of 0 would prove little.
    let synth = (1..)
        .map(|seed| coin_value::synth::render(seed, 1024, 768))
        .find(|s| s.coins.len() >= 3)
        .unwrap();
    let local = coin_value::count(&synth.jpeg, &Default::default(), false)
        .map_err(|e| format!("in-process count failed: {e}"))?;
    let resp = CoinValueServiceClient::new(channel)
        .count(authed(CountRequest {
            image: Some(Image::Data(synth.jpeg.clone())),
            annotate: false,
        }))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    if resp.total_cents != local.total_cents {
        return Err(format!(
            "container says {} cents, the library in-process {} (true total {})",
            resp.total_cents, local.total_cents, synth.total_cents
        ));
    }
    if resp.total_cents != synth.total_cents {
        return Err(format!(
            "total {} cents, the picture holds {}",
            resp.total_cents, synth.total_cents
        ));
    }
    Ok(format!(
        "{} coins, {} cents, as drawn",
        resp.coins.len(),
        resp.total_cents
    ))
}

async fn unauthenticated_call(channel: Channel) -> Result<String, String> {
    let req = tonic::Request::new(CountRequest {
        image: Some(Image::Data(vec![0xff, 0xd8])),
        annotate: false,
    });
    match CoinValueServiceClient::new(channel).count(req).await {
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            Ok(format!("refused: {}", s.message()))
        }
        Err(s) => Err(format!(
            "expected UNAUTHENTICATED, got {:?}: {}",
            s.code(),
            s.message()
        )),
        Ok(_) => Err("a call without a credential was answered".into()),
    }
}

/// Every container of the project exits 0 on `down`: read from the engine's `die` events.
fn down_cleanly(stack: &mut Stack, ids: &[(String, String)]) -> Result<String, String> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = Instant::now();
    stack.down()?;
    let took = start.elapsed();
    let until = since + took.as_secs() + 2;
    let events = docker_events(
        since,
        until,
        &format!("label=com.docker.compose.project={}", stack.project),
        "die",
        "{{.Actor.ID}} {{index .Actor.Attributes \"exitCode\"}}",
    )?
    .join("\n");
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for (service, id) in ids {
        match events
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .and_then(|l| l.split_whitespace().nth(1))
        {
            Some("0") => seen.push(service.as_str()),
            Some(code) => bad.push(format!("{service} exited {code}")),
            None => bad.push(format!("{service}: no exit seen")),
        }
    }
    if bad.is_empty() {
        Ok(format!(
            "down took {:.1}s (grace periods 30-45s); exit 0: {}",
            took.as_secs_f64(),
            seen.join(", ")
        ))
    } else {
        Err(bad.join("; "))
    }
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The `fargo` binary of this build (next to the test's own `deps/` folder; docker/e2e.sh
/// builds it), or `FARGO_BIN`.
fn fargo_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("FARGO_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("fargo")
}

/// `docker events` of job containers (label `fargo.job`) since `since`, one line each.
fn job_events(since: u64, event: &str) -> Result<Vec<String>, String> {
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    docker_events(
        since,
        until,
        "label=fargo.job",
        event,
        "{{.Actor.ID}} {{index .Actor.Attributes \"name\"}}",
    )
}

/// `docker events` between two Unix times for one label and event, one line per event.
fn docker_events(
    since: u64,
    until: u64,
    label: &str,
    event: &str,
    format: &str,
) -> Result<Vec<String>, String> {
    let out = run(Command::new("docker").args([
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        label,
        "--filter",
        &format!("event={event}"),
        "--format",
        format,
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The Container-on-Demand pattern for real: `fargo watch --backend docker` watches a host
/// folder; a video dropped into it starts exactly one job container, with the input and
/// output folders mounted, whose thumbnail appears in the output folder; the container is
/// gone afterwards.
fn on_demand_job(jobs: &Path, video: &Path) -> Result<String, String> {
    let (input, output) = (jobs.join("in"), jobs.join("out"));
    for d in [&input, &output] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    // A root-owned output folder keeps the image's user 10001, which must write there.
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| e.to_string())?;
    let bin = fargo_bin();
    if !bin.exists() {
        return Err(format!(
            "{} is missing: cargo build -p fargo",
            bin.display()
        ));
    }
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let log = jobs.join("watch.log");
    let mut watch = Command::new(&bin)
        .args(["watch"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--backend", "docker", "--interval", "500ms"])
        // Sized like the Fargate task: the job task definition's cpu and memory.
        .arg("--job-taskdef")
        .arg(fargo_docker_e2e::repo_root().join("taskdefs/thumbnail-job.json"))
        .stdout(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(jobs.join("watch.err")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let result = (|| {
        // Dropped the way a careful copy does: written under a name the watcher ignores,
        // then renamed into place in one step.
        let part = input.join("clip.mp4.part");
        std::fs::copy(video, &part).map_err(|e| e.to_string())?;
        std::fs::rename(&part, input.join("clip.mp4")).map_err(|e| e.to_string())?;
        let report = eventually(Duration::from_secs(180), || {
            if let Ok(Some(status)) = watch.try_wait() {
                return Ok(Err(format!(
                    "fargo watch exited ({status}): {}",
                    std::fs::read_to_string(jobs.join("watch.err")).unwrap_or_default()
                )));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match text.lines().find(|l| l.contains("clip.mp4")) {
                Some(l) if l.starts_with("ok\t") => Ok(Ok(l.to_owned())),
                Some(l) => Ok(Err(format!("the job failed: {l}"))),
                None => Err("no job reported for clip.mp4".to_string()),
            }
        })??;
        let thumb = output.join("clip.png");
        let img = image::open(&thumb).map_err(|e| format!("{}: {e}", thumb.display()))?;
        let made = files(&output);
        if made.len() != 1 {
            return Err(format!(
                "expected exactly one file in the output folder, found {made:?}"
            ));
        }
        // The container is removed once the job has ended.
        let left = eventually(Duration::from_secs(30), || {
            let out =
                run(Command::new("docker").args(["ps", "-aq", "--filter", "label=fargo.job"]))?;
            let ids = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if ids.is_empty() {
                Ok(())
            } else {
                Err(format!("job containers still exist: {ids}"))
            }
        });
        left?;
        let started = job_events(since, "start")?;
        if started.len() != 1 {
            return Err(format!(
                "expected one job container started, the engine saw {}: {started:?}",
                started.len()
            ));
        }
        Ok(format!(
            "one container ({}) started and removed for the dropped video, thumbnail {} \
             {}x{} in the mounted output folder; watch said: {}",
            started[0].split_whitespace().nth(1).unwrap_or("?"),
            thumb.file_name().unwrap().to_string_lossy(),
            img.width(),
            img.height(),
            report.replace('\t', " ")
        ))
    })();
    let _ = watch.kill();
    let _ = watch.wait();
    result
}

/// A sidecar that never turns healthy fails the wait, which names it and shows its logs.
fn never_healthy(env: &[(String, String)], dir: &Path) -> Result<String, String> {
    let sick = dir.join("docker-compose.sick.yml");
    // coin-value's health check asks about a service it does not serve: NOT_FOUND, forever.
    std::fs::write(
        &sick,
        "services:\n  coin-value:\n    healthcheck:\n      test: ['CMD', '/usr/local/bin/coin-value', \
         'healthcheck', '--service', 'no.such.Service']\n      interval: 1s\n      retries: 2\n      \
         start_period: 0s\n",
    )
    .map_err(|e| e.to_string())?;
    let project = format!("fargoe2esick{}", std::process::id());
    let stack = Stack::new(&project, &[sick], env.to_vec())?;
    match stack.up(Duration::from_secs(90)) {
        Ok(out) => Err(format!(
            "up succeeded with a sidecar that is never healthy: {out}"
        )),
        Err(out) => {
            let named = out.contains("coin-value is unhealthy")
                || out.contains("coin-value did not become healthy");
            if named && out.contains("last log lines of coin-value") {
                Ok("up failed naming coin-value, with its last health checks and log lines".into())
            } else {
                Err(format!(
                    "the failure does not name coin-value with its logs: {out}"
                ))
            }
        }
    }
}

/// Like ECS with an essential container, the foreground stack stops when one container exits.
fn essential_exit_stops_the_stack(env: &[(String, String)]) -> Result<String, String> {
    let project = format!("fargoe2eess{}", std::process::id());
    let stack = Stack::new(&project, &[], env.to_vec())?;
    let mut fg = stack
        .command(["up", "--abort-on-container-exit", "--no-color"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let victim = eventually(Duration::from_secs(60), || {
        let id = stack.container("coin-value")?;
        match inspect(&id, "{{.State.Health.Status}}")?.as_str() {
            "healthy" => Ok(id),
            other => Err(format!("coin-value is {other}")),
        }
    });
    let victim = match victim {
        Ok(id) => id,
        Err(e) => {
            let _ = fg.kill();
            return Err(format!("the stack did not come up: {e}"));
        }
    };
    let start = Instant::now();
    run(Command::new("docker").args(["kill", &victim]))?;
    let exited = eventually(Duration::from_secs(60), || match fg.try_wait() {
        Ok(Some(status)) => Ok(status),
        _ => Err("`up --abort-on-container-exit` still running".to_string()),
    });
    let still: Vec<String> = SERVICES
        .iter()
        .filter(|s| {
            stack
                .container(s)
                .and_then(|id| inspect(&id, "{{.State.Running}}"))
                .is_ok_and(|r| r == "true")
        })
        .map(|s| s.to_string())
        .collect();
    if exited.is_err() {
        let _ = fg.kill();
    }
    exited?;
    if still.is_empty() {
        Ok(format!(
            "coin-value killed; every container stopped {:.1}s later",
            start.elapsed().as_secs_f64()
        ))
    } else {
        Err(format!(
            "still running after the abort: {}",
            still.join(", ")
        ))
    }
}

#[test]
#[ignore = "needs the Docker engine and the images: run docker/e2e.sh"]
fn assembly_under_compose() {
    let version = match engine() {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    println!("Docker engine {version}");
    for s in SERVICES {
        let name = image_name(s);
        assert!(
            inspect(&name, "{{.Id}}").is_ok(),
            "image {name} is missing: run docker/build-images.sh --prebuilt first"
        );
    }

    let data = tempfile::tempdir().unwrap();
    for d in ["in", "out"] {
        std::fs::create_dir(data.path().join(d)).unwrap();
    }
    // The containers run as uid 10001; the job writes its thumbnail here.
    for d in [
        data.path().to_path_buf(),
        data.path().join("in"),
        data.path().join("out"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let video = data.path().join("in/clip.mp4");
    fargo_testkit::h264_clip(&video, "320x240", 2, 25).unwrap();
    let video_bytes = std::fs::read(&video).unwrap();

    let port = fargo_testkit::free_port();
    let project = format!("fargoe2e{}", std::process::id());
    let config = tempfile::tempdir().unwrap();
    let mut stack = Stack::new(
        &project,
        &[overrides(config.path())],
        vec![
            ("FARGO_PORT_GRPC".into(), port.to_string()),
            ("FARGO_DATA".into(), data.path().display().to_string()),
        ],
    )
    .unwrap();
    let mut checks = Checks::default();

    let up = stack.up(Duration::from_secs(150));
    let healthy = checks.record(
        "up: every container running and healthy",
        up.map(|_| format!("{} containers, gRPC on 127.0.0.1:{port}", SERVICES.len())),
    );
    let ids: Vec<(String, String)> = SERVICES
        .iter()
        .filter_map(|s| stack.container(s).ok().map(|id| (s.to_string(), id)))
        .collect();

    if healthy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = rt.block_on(async {
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .timeout(Duration::from_secs(60))
                .connect()
                .await
        });
        match channel {
            Ok(ch) => {
                checks.record(
                    "thumbnail through the auth-proxy",
                    rt.block_on(thumbnail_call(ch.clone(), &video_bytes)),
                );
                checks.record(
                    "coin-value through the auth-proxy",
                    rt.block_on(coin_call(ch.clone())),
                );
                checks.record(
                    "auth-proxy refuses a call without credential",
                    rt.block_on(unauthenticated_call(ch)),
                );
            }
            Err(e) => {
                checks.record(
                    "connect to the published port",
                    Err(format!("127.0.0.1:{port}: {e}")),
                );
            }
        }

        let logging = stack.container("logging").unwrap_or_default();
        let logged = eventually(Duration::from_secs(20), || {
            let log = logs(&logging)?;
            let wanted = [
                ("thumbnail", "ThumbnailService/ExtractUpload"),
                ("coin-value", "CoinValueService/Count"),
                ("auth-proxy", "ThumbnailService/ExtractUpload"),
                ("auth-proxy", "CoinValueService/Count"),
            ];
            let missing: Vec<String> = wanted
                .iter()
                .filter(|(svc, call)| records(&log, svc, call).is_empty())
                .map(|(svc, call)| format!("{svc} {call}"))
                .collect();
            if missing.is_empty() {
                Ok(format!("records of {} calls from 3 services", wanted.len()))
            } else {
                Err(format!(
                    "no record of: {}; last lines: {}",
                    missing.join(", "),
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ))
            }
        });
        checks.record("logging sidecar's output holds the calls' records", logged);
    }

    checks.record(
        "on-demand: fargo watch --backend docker, one container per dropped video",
        on_demand_job(&data.path().join("jobs"), &video),
    );
    checks.record(
        "down: every container exits 0 within its grace period",
        down_cleanly(&mut stack, &ids),
    );

    let env = vec![
        (
            "FARGO_PORT_GRPC".to_owned(),
            fargo_testkit::free_port().to_string(),
        ),
        ("FARGO_DATA".to_owned(), data.path().display().to_string()),
    ];
    checks.record(
        "a sidecar never healthy fails up, named, with its logs",
        never_healthy(&env, config.path()),
    );
    checks.record(
        "an essential container that exits stops the stack (up --abort-on-container-exit)",
        essential_exit_stops_the_stack(&env),
    );

    println!("{}", checks.summary());
    assert!(checks.failures().is_empty(), "{}", checks.summary());
}
