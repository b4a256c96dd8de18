//! One authenticated call through the auth-proxy to coin-value yields a trace whose
//! spans from both share one trace id, and their log records; the logging sidecar
//! receives all of it and writes it to its output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fargo_proto::coinvalue::v1::CountRequest;
use fargo_proto::coinvalue::v1::coin_value_service_client::CoinValueServiceClient;
use serde_json::Value;

struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, exe: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            name,
            child: cmd.spawn().unwrap(),
        }
    }

    /// SIGTERM, then wait for a clean exit (each flushes its telemetry on the way out).
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "{} exited with {s:?}", self.name);
                return;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fargo_runtime::cli::check_health(addr, "", Duration::from_millis(500))
        .await
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "{addr} never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_call_is_one_trace_across_proxy_and_service_in_the_logging_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("telemetry.jsonl");
    let port = |_| fargo_testkit::free_port();
    let (lp, cp, pp) = (port(0), port(1), port(2));
    let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };

    // The logging sidecar starts first and stops last, as dependsOn orders it.
    let logging_cfg = dir.path().join("logging.yaml");
    std::fs::write(
        &logging_cfg,
        format!(
            "server:\n  listen: \"127.0.0.1:{lp}\"\nlifecycle:\n  keep_receiving: 200ms\nexporters:\n  - kind: file\n    path: {}\n",
            out.display()
        ),
    )
    .unwrap();
    let logging = Proc::spawn(
        "logging",
        env!("CARGO_BIN_EXE_e2e-logging"),
        &["serve", "--config", logging_cfg.to_str().unwrap()],
        &[],
    );
    wait_healthy(addr(lp)).await;

    let otlp = format!("http://127.0.0.1:{lp}");
    let coin = Proc::spawn(
        "coin-value",
        env!("CARGO_BIN_EXE_e2e-coin-value"),
        &["serve"],
        &[
            ("FARGO_SERVER__LISTEN".into(), addr(cp).to_string()),
            ("FARGO_TELEMETRY__OTLP_ENDPOINT".into(), otlp.clone()),
            (
                "FARGO_TELEMETRY__LOG_LEVEL".into(),
                "info,coin_value=debug,fargo_runtime=debug".into(),
            ),
        ],
    );
    wait_healthy(addr(cp)).await;

    let api_key = "e2e-key-0123456789";
    let proxy_cfg = dir.path().join("auth-proxy.yaml");
    std::fs::write(
        &proxy_cfg,
        format!(
            "server:\n  listen: \"127.0.0.1:{pp}\"\nclusters:\n  coin-value:\n    endpoints: [\"127.0.0.1:{cp}\"]\n  thumbnail:\n    endpoints: [\"127.0.0.1:{}\"]\n",
            fargo_testkit::free_port()
        ),
    )
    .unwrap();
    let mut proxy_env = auth_proxy::dev_env(api_key);
    proxy_env.push(("FARGO_TELEMETRY__OTLP_ENDPOINT".into(), otlp));
    let proxy = Proc::spawn(
        "auth-proxy",
        env!("CARGO_BIN_EXE_e2e-auth-proxy"),
        &["serve", "--config", proxy_cfg.to_str().unwrap()],
        &proxy_env,
    );
    wait_healthy(addr(pp)).await;

    // The call: a synthetic photo of coins, through the proxy with the API key.
    let photo = coin_value::synth::render(3, 1600, 1200);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{pp}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CoinValueServiceClient::new(channel);
    let mut req = tonic::Request::new(CountRequest {
        image: Some(fargo_proto::coinvalue::v1::count_request::Image::Data(
            photo.jpeg.clone(),
        )),
        annotate: false,
    });
    req.metadata_mut()
        .insert("x-api-key", api_key.parse().unwrap());
    let resp = client
        .count(req)
        .await
        .expect("authenticated call through the proxy");
    assert!(!resp.get_ref().coins.is_empty());

    // Stop in reverse dependency order; each flushes its telemetry to the sidecar.
    proxy.stop();
    coin.stop();
    logging.stop();

    let lines = read_lines(&out);
    let method = "/fargo.coinvalue.v1.CoinValueService/Count";
    let proxy_span = lines
        .iter()
        .find(|l| {
            l["signal"] == "span" && l["service"] == "auth-proxy" && l.to_string().contains(method)
        })
        .unwrap_or_else(|| panic!("no auth-proxy span for the call in {lines:#?}"));
    let trace_id = proxy_span["trace_id"].as_str().unwrap().to_owned();
    let in_trace = |l: &&Value| l["trace_id"] == trace_id.as_str();

    let service_spans: Vec<_> = lines
        .iter()
        .filter(|l| l["signal"] == "span" && l["service"] == "coin-value")
        .filter(in_trace)
        .collect();
    assert!(
        !service_spans.is_empty(),
        "no coin-value span in trace {trace_id}: {lines:#?}"
    );
    assert!(
        service_spans.iter().any(|s| s.to_string().contains(method)),
        "{service_spans:#?}"
    );
    let logs: Vec<_> = lines
        .iter()
        .filter(|l| l["signal"] == "log")
        .filter(in_trace)
        .collect();
    assert!(
        logs.iter().any(|l| l["service"] == "coin-value"),
        "no coin-value log record in trace {trace_id}: {logs:#?}"
    );
    // The proxy's access record for this very call (principal, method, upstream, status).
    let upstream = addr(cp).to_string();
    let access = lines
        .iter()
        .find(|l| {
            l["signal"] == "log"
                && l["service"] == "auth-proxy"
                && l["attributes"]["method"] == method
                && l["attributes"]["upstream"] == upstream.as_str()
        })
        .unwrap_or_else(|| panic!("no auth-proxy access record for the call: {lines:#?}"));
    assert_eq!(access["attributes"]["principal"], "dev");
    assert_eq!(access["attributes"]["grpc_status"], "0");
    // The proxy writes that record when the response body is dropped, which can be
    // outside the call's span; when it does carry a trace id, it must be this one.
    if let Some(t) = access.get("trace_id") {
        assert_eq!(t, trace_id.as_str());
    }
}
