//! The receiver, buffers and file exporter, in process on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use logging::BufferConfig;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_spans_reach_the_file_with_their_trace_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let sidecar = Sidecar::start(file_config(&path)).await;

    let mut logs_client = sidecar.logs().await;
    let resp = logs_client
        .export(logs("svc-a", "hello", 3, 200))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    let mut traces = sidecar.traces().await;
    traces
        .export(spans("svc-a", [7; 16], &["GET /x", "db"]))
        .await
        .unwrap();
    // An empty request is fine too.
    logs_client
        .export(logs("svc-a", "none", 0, 0))
        .await
        .unwrap();

    let stats = sidecar.stats().await;
    assert_eq!(stats.logs.as_ref().unwrap().received, 3);
    assert_eq!(stats.spans.as_ref().unwrap().received, 2);
    sidecar.stop().await;

    let lines = read_lines(&path);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let logs: Vec<_> = lines.iter().filter(|l| l["signal"] == "log").collect();
    assert_eq!(logs.len(), 3);
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l["service"], "svc-a");
        assert_eq!(l["severity"], "INFO");
        assert!(
            l["body"]
                .as_str()
                .unwrap()
                .starts_with(&format!("hello {i} "))
        );
        assert_eq!(l["trace_id"], "ab".repeat(16));
        assert_eq!(l["span_id"], "cd".repeat(8));
        assert_eq!(l["attributes"]["seq"], i.to_string());
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
    }
    let spans: Vec<_> = lines.iter().filter(|l| l["signal"] == "span").collect();
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s["trace_id"] == "07".repeat(16)));
    assert_eq!(spans[0]["name"], "GET /x");
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["duration_us"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_refuses_with_retry_info_and_retrying_senders_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut cfg = file_config(&path);
    // A slow destination (2,000 records/s) behind a small buffer.
    cfg.exporters = vec![file_exporter(
        &path,
        BufferConfig {
            max_bytes: 64 * 1024,
            rate_limit: 2_000,
            batch_records: 200,
            ..BufferConfig::default()
        },
    )];
    cfg.receiver.sender_share = 1.0;
    let sidecar = Sidecar::start(cfg).await;

    let mut senders = Vec::new();
    for s in 0..3 {
        let mut client = sidecar.logs().await;
        senders.push(tokio::spawn(async move {
            let mut refused = 0;
            for b in 0..10 {
                let req = logs(&format!("sender-{s}"), &format!("b{b}"), 100, 200);
                refused += send_retrying(&mut client, req).await;
            }
            refused
        }));
    }
    let mut refused = 0;
    for s in senders {
        refused += s.await.unwrap();
    }
    assert!(
        refused > 0,
        "3,000 records into a 64 KiB buffer drained at 2,000/s must push back"
    );

    let stats = sidecar.stats().await;
    let logs_stats = stats.logs.unwrap();
    assert_eq!(logs_stats.received, 3000);
    assert!(logs_stats.refused >= 100);
    let exporter = &stats.exporters[0];
    assert!(exporter.buffered_bytes <= exporter.capacity_bytes);
    sidecar.stop().await;

    let lines = read_lines(&path);
    assert_eq!(
        lines.len(),
        3000,
        "every retried record arrives exactly once"
    );
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        assert!(seen.insert(format!("{}|{}", l["service"], l["body"])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_rejected_through_partial_success_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut cfg = file_config(&path);
    cfg.receiver.max_record_bytes = 4096;
    let sidecar = Sidecar::start(cfg).await;

    let mut req = logs("svc", "big", 4, 200);
    let rec = &mut req.resource_logs[0].scope_logs[0].log_records[1];
    rec.attributes
        .push(opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "huge".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("y".repeat(100_000))),
            }),
            ..Default::default()
        });
    let resp: ExportLogsServiceResponse =
        sidecar.logs().await.export(req).await.unwrap().into_inner();
    let partial = resp
        .partial_success
        .expect("partial_success for the huge record");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("max_record_bytes"),
        "{}",
        partial.error_message
    );
    let stats = sidecar.stats().await.logs.unwrap();
    assert_eq!((stats.received, stats.rejected), (3, 1));
    sidecar.stop().await;
    assert_eq!(read_lines(&path).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_sender_leaves_room_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut cfg = file_config(&path);
    cfg.exporters = vec![file_exporter(
        &path,
        BufferConfig {
            max_bytes: 256 * 1024,
            rate_limit: 500,
            batch_records: 50,
            ..BufferConfig::default()
        },
    )];
    cfg.receiver.sender_share = 0.5;
    cfg.lifecycle.flush_timeout = Duration::from_millis(200);
    let sidecar = Sidecar::start(cfg).await;

    // The flood: no retries, just more, until refused.
    let mut flood = sidecar.logs().await;
    let mut refusal = None;
    for i in 0..200 {
        match flood
            .export(logs("flood", &format!("f{i}"), 100, 200))
            .await
        {
            Ok(_) => {}
            Err(s) => {
                refusal = Some(s);
                break;
            }
        }
    }
    let refusal = refusal.expect("the flood must be refused at its share");
    assert_eq!(refusal.code(), tonic::Code::Unavailable);
    assert!(refusal.get_error_details().retry_info().is_some());
    assert!(refusal.message().contains("share"), "{}", refusal.message());

    // Another sender on its own connection still gets in at once.
    let mut polite = sidecar.logs().await;
    polite.export(logs("polite", "p", 10, 200)).await.unwrap();
    // The sidecar stays up and answers health.
    wait_ready(sidecar.addr).await;
    let stats = sidecar.stats().await;
    assert!(stats.logs.unwrap().refused >= 100);
    // Stopping with a short flush deadline: what cannot be written in time is counted.
    sidecar.shutdown.trigger();
    sidecar.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_after_sigterm_are_still_received_and_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut cfg = file_config(&path);
    cfg.lifecycle.keep_receiving = Duration::from_millis(800);
    let sidecar = Sidecar::start(cfg).await;
    let mut client = sidecar.logs().await;
    client.export(logs("svc", "before", 5, 200)).await.unwrap();

    sidecar.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still receiving: the other containers are draining and sending their last words.
    client.export(logs("svc", "after", 5, 200)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), sidecar.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 10);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["body"].as_str().unwrap().starts_with("after"))
            .count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rotate_by_size_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rot.jsonl");
    let mut cfg = file_config(&path);
    cfg.exporters = vec![logging::ExporterConfig::File(logging::FileConfig {
        path: path.clone(),
        max_file_bytes: 8 * 1024,
        keep: 2,
        buffer: BufferConfig {
            batch_records: 10,
            ..BufferConfig::default()
        },
        name: None,
    })];
    let sidecar = Sidecar::start(cfg).await;
    let mut client = sidecar.logs().await;
    for i in 0..20 {
        client
            .export(logs("svc", &format!("r{i}"), 10, 300))
            .await
            .unwrap();
    }
    sidecar.stop().await;
    let rotated = |n: usize| dir.path().join(format!("rot.jsonl.{n}"));
    assert!(path.exists() && rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "only `keep` rotated files remain");
    for p in [rotated(1), rotated(2)] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= 8 * 1024, "{} is {len} bytes", p.display());
    }
    // The newest records are in the live file, the oldest are gone.
    let lines = read_lines(&path);
    assert!(lines.len() < 200);
    assert!(
        lines
            .iter()
            .any(|l| l["body"].as_str().unwrap().starts_with("r19 "))
    );
}
