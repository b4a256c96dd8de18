//! A third-party OTLP client: the Python OpenTelemetry SDK's gRPC exporters
//! (`pip install opentelemetry-exporter-otlp`) sending a span and a log to the sidecar.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const SCRIPT: &str = r#"
import logging, sys
from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

endpoint = sys.argv[1]
resource = Resource.create({"service.name": "py-client"})
tp = TracerProvider(resource=resource)
tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
trace.set_tracer_provider(tp)
lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True)))
set_logger_provider(lp)
log = logging.getLogger("py")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))

with trace.get_tracer("py").start_as_current_span("py-span"):
    log.warning("hello from python")
assert tp.force_flush(10000), "span export failed"
assert lp.force_flush(10000), "log export failed"
tp.shutdown()
lp.shutdown()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_opentelemetry_sdk_exports_spans_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let sidecar = Sidecar::start(file_config(&path)).await;
    let url = sidecar.url();
    let out = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT, &url])
        .output()
        .await
        .expect("python3 not found");
    assert!(
        out.status.success(),
        "python exporter failed (install with `pip install opentelemetry-exporter-otlp`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = sidecar.stats().await;
    sidecar.stop().await;
    assert_eq!(stats.spans.unwrap().received, 1);
    assert_eq!(stats.logs.unwrap().received, 1);

    let lines = read_lines(&path);
    let span = lines
        .iter()
        .find(|l| l["signal"] == "span")
        .expect("the Python span");
    assert_eq!(span["service"], "py-client");
    assert_eq!(span["name"], "py-span");
    let log = lines
        .iter()
        .find(|l| l["signal"] == "log")
        .expect("the Python log");
    assert_eq!(log["service"], "py-client");
    assert_eq!(log["body"], "hello from python");
    assert_eq!(log["severity"], "WARN");
    assert_eq!(
        log["trace_id"], span["trace_id"],
        "the log carries its span's trace id"
    );
}
