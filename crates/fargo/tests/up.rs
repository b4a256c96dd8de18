//! `fargo up` as a user runs it: the whole assembly from taskdefs/assembly.json on its
//! own ports, a clear refusal when those ports are taken, and a clean Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PORTS: [(&str, u16); 4] = [
    ("logging", 4317),
    ("thumbnail", 50061),
    ("coin-value", 50062),
    ("auth-proxy", 50051),
];

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fargo_up(data: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args(["up", "--data-dir"])
        .arg(data)
        .current_dir(root())
        .env("FARGO_DEV_API_KEY", "test-dev-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn healthy(port: u16) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fargo_runtime::cli::check_health(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "",
        Duration::from_secs(1),
    ))
    .unwrap_or(false)
}

/// Lines of a child's stream, readable with a timeout.
fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn up_runs_the_assembly_refuses_a_second_copy_and_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut first = fargo_up(data.path());
    let out = lines(first.stdout.take().unwrap());
    let stderr = lines(first.stderr.take().unwrap());

    // The banner comes once every container is healthy.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut banner = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = out.recv_timeout(Duration::from_millis(200)) {
            if l.contains("api key:") || l.contains("endpoint:") {
                banner.push(l);
            }
            if banner.len() == 2 {
                break;
            }
        }
        if let Some(s) = first.try_wait().unwrap() {
            // Usually a port of the assembly held by something else; its message says which.
            std::thread::sleep(Duration::from_millis(200));
            let said: Vec<String> = stderr.try_iter().collect();
            panic!("fargo up exited early: {s}; stderr: {said:#?}");
        }
    }
    assert_eq!(banner.len(), 2, "no banner from fargo up");
    assert!(
        banner.iter().any(|l| l.contains("test-dev-key")),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l.contains("127.0.0.1:50051")),
        "{banner:?}"
    );
    for (name, port) in PORTS {
        assert!(
            healthy(port),
            "{name} is not SERVING on its task-definition port {port}"
        );
    }
    through_the_proxy();

    // A second copy fails at once, naming a port, and starts nothing.
    let second = Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args(["up", "--data-dir"])
        .arg(data.path())
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("address in use"), "{msg}");
    assert!(
        PORTS
            .iter()
            .any(|(_, p)| msg.contains(&format!("port {p}"))),
        "{msg}"
    );
    for (name, port) in PORTS {
        assert!(healthy(port), "{name} hurt by the second start");
    }

    // Ctrl-C: everything drains and fargo exits 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "fargo up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "fargo up exited with {status}");
    for (name, port) in PORTS {
        assert!(!healthy(port), "{name} still answering after stop");
    }
}

/// The printed development key opens the door; no key keeps it shut.
fn through_the_proxy() {
    use fargo_proto::coinvalue::v1::coin_value_service_client::CoinValueServiceClient;
    use fargo_proto::coinvalue::v1::{CountRequest, count_request};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
            .connect()
            .await
            .unwrap();
        let req = || CountRequest {
            image: Some(count_request::Image::Data(b"not an image".to_vec())),
            ..Default::default()
        };
        let mut client = CoinValueServiceClient::new(channel);
        let err = client.count(req()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        let mut with_key = tonic::Request::new(req());
        with_key
            .metadata_mut()
            .insert("x-api-key", "test-dev-key".parse().unwrap());
        let err = client.count(with_key).await.unwrap_err();
        // Past the proxy: the coin-value service itself judges the bytes.
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    });
}
