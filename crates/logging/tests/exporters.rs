//! The OTLP forward and CloudWatch Logs exporters against real servers: a second
//! sidecar, and moto started for the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use logging::{BufferConfig, ExporterConfig, OtlpConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_forward_retries_with_backoff_until_the_collector_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("downstream.jsonl");
    let port = fargo_testkit::free_port();

    let mut cfg = file_config(&dir.path().join("unused.jsonl"));
    cfg.exporters = vec![ExporterConfig::Otlp(OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        timeout: Duration::from_secs(2),
        buffer: BufferConfig {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..BufferConfig::default()
        },
        name: Some("collector".into()),
    })];
    let front = Sidecar::start(cfg).await;
    front
        .logs()
        .await
        .export(logs("svc", "fwd", 4, 200))
        .await
        .unwrap();
    front
        .traces()
        .await
        .export(spans("svc", [9; 16], &["a", "b"]))
        .await
        .unwrap();

    // Nothing listens downstream yet: the exporter retries, the data waits in its buffer.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = front.stats().await;
    let e = &stats.exporters[0];
    assert_eq!((e.name.as_str(), e.kind.as_str()), ("collector", "otlp"));
    assert_eq!(e.exported, 0);
    assert!(e.retried > 0, "{e:?}");
    assert!(e.buffered_bytes > 0);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let back = Sidecar::start_on(listener, file_config(&path)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = front.stats().await.exporters[0].clone();
        if e.exported == 6 {
            assert_eq!(e.dropped, 0);
            assert_eq!(e.buffered_bytes, 0);
            break;
        }
        assert!(Instant::now() < deadline, "never forwarded: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    front.stop().await;
    back.stop().await;
    let lines = read_lines(&path);
    assert_eq!(lines.iter().filter(|l| l["signal"] == "log").count(), 4);
    assert_eq!(lines.iter().filter(|l| l["signal"] == "span").count(), 2);
}

fn cloudwatch_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .http_client(http)
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

/// The real binary, configured by file and environment as ECS would, stopped by SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_exporter_creates_the_stream_and_delivers_on_sigterm() {
    let moto = fargo_testkit::Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let port = fargo_testkit::free_port();
    let cfg_path = dir.path().join("logging.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            r#"
server:
  listen: "127.0.0.1:{port}"
  grace_period: 5s
lifecycle:
  keep_receiving: 300ms
  flush_timeout: 10s
exporters:
  - kind: stdout
  - kind: cloudwatch
    log_group: /fargo/test
    log_stream: task-1
    buffer:
      initial_backoff: 50ms
"#
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logging"));
    cmd.args(["serve", "--config"])
        .arg(&cfg_path)
        .env("FARGO_TELEMETRY__LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in moto.aws_env() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut logs_client =
        opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::new(
            channel.clone(),
        );
    logs_client
        .export(logs("svc-cw", "cw", 3, 200))
        .await
        .unwrap();
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(
        channel,
    )
    .export(spans("svc-cw", [3; 16], &["op"]))
    .await
    .unwrap();

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    // The stdout exporter wrote the records; the sidecar's own log reported the totals.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("\"svc-cw\"") && l.contains("\"signal\":\"log\""))
            .count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("final telemetry counters"), "{stdout}");

    let client = cloudwatch_client(&moto.endpoint());
    let events = client
        .get_log_events()
        .log_group_name("/fargo/test")
        .log_stream_name("task-1")
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let messages: Vec<serde_json::Value> = events
        .events()
        .iter()
        .map(|e| serde_json::from_str(e.message().unwrap()).unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert_eq!(messages.iter().filter(|m| m["signal"] == "log").count(), 3);
    assert!(
        messages
            .iter()
            .any(|m| m["signal"] == "span" && m["trace_id"] == "03".repeat(16))
    );
}
