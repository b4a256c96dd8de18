//! The gRPC service on a real socket, the job binary's environment contract, and S3
//! input/output against a moto server started here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{cli_frame, decode_png, diff, fixtures};
use fargo_proto::thumbnail::v1 as pb;
use pb::thumbnail_service_client::ThumbnailServiceClient;
use tonic::Code;

async fn start(
    config: thumbnail::Config,
) -> (
    ThumbnailServiceClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(thumbnail::serve(listener, config, async {
        let _ = rx.await;
    }));
    let client = loop {
        if let Ok(c) = ThumbnailServiceClient::connect(format!("http://{addr}")).await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    (client, tx)
}

fn opts(positions: &[&str]) -> pb::ExtractOptions {
    pb::ExtractOptions {
        positions: positions.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn extract_by_uri_and_by_upload_match_the_cli() {
    let f = fixtures();
    let (mut c, _stop) = start(thumbnail::Config::default()).await;
    let input = f.path("h264.mp4");
    let r = c
        .extract(pb::ExtractRequest {
            input_uri: format!("file://{input}"),
            options: Some(opts(&["1.5", "3"])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.thumbnails.len(), 2);
    assert!((r.duration_seconds - 4.0).abs() < 0.1);
    assert_eq!(
        diff(
            &decode_png(&r.thumbnails[0].image),
            &cli_frame(&input, "1.5", None)
        ),
        (0, 0)
    );

    // Streamed up in small chunks, with the options in the first message.
    let bytes = std::fs::read(&input).unwrap();
    let mut msgs: Vec<pb::UploadChunk> = bytes
        .chunks(16 * 1024)
        .map(|d| pb::UploadChunk {
            options: None,
            data: d.to_vec(),
        })
        .collect();
    msgs[0].options = Some(opts(&["3"]));
    let r2 = c
        .extract_upload(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.thumbnails[0].image, r.thumbnails[1].image);
}

#[tokio::test]
async fn bad_inputs_get_the_right_codes_and_the_service_stays_up() {
    let f = fixtures();
    let (mut c, _stop) = start(thumbnail::Config::default()).await;
    let cases = [
        ("notes.mp4", "0", Code::InvalidArgument),
        ("empty.mp4", "0", Code::InvalidArgument),
        ("truncated.mp4", "1", Code::InvalidArgument),
        ("corrupt.mp4", "1", Code::InvalidArgument),
        ("audio.m4a", "0", Code::InvalidArgument),
        ("huge.y4m", "0", Code::InvalidArgument),
        ("big.y4m", "0", Code::InvalidArgument),
        ("missing.mp4", "0", Code::NotFound),
        ("h264.mp4", "9", Code::OutOfRange),
        ("h264.mp4", "soon", Code::InvalidArgument),
    ];
    for (name, pos, code) in cases {
        let input = f.path(name);
        let e = c
            .extract(pb::ExtractRequest {
                input_uri: input.clone(),
                options: Some(opts(&[pos])),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{name} at {pos}: {}", e.message());
        if name != "h264.mp4" {
            assert!(
                e.message().contains(name),
                "{name}: `{}` does not name the input",
                e.message()
            );
        }
    }
    let e = c
        .extract(pb::ExtractRequest {
            input_uri: "ftp://x/y".into(),
            options: Some(opts(&["0"])),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .extract_upload(tokio_stream::iter(vec![pb::UploadChunk {
            options: Some(opts(&["0"])),
            data: vec![],
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    // Still serving.
    let r = c
        .extract(pb::ExtractRequest {
            input_uri: f.path("vp9.webm"),
            options: Some(opts(&["1"])),
        })
        .await;
    assert!(r.is_ok());
}

fn job(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thumbnail"))
        .arg("job")
        .args(args)
        .env_remove("INPUT_VIDEO_FILE_URL")
        .env_remove("POSITION_TIME_DURATION")
        .env_remove("OUTPUT_S3_PATH")
        .env_remove("OUTPUT_THUMBS_FILE_NAME")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn job_takes_the_original_environment_contract() {
    let f = fixtures();
    let out_dir = tempfile::tempdir().unwrap();
    let input = f.path("hevc.mp4");
    let o = job(
        &[
            ("INPUT_VIDEO_FILE_URL", input.clone()),
            ("POSITION_TIME_DURATION", "00:00:02".into()),
            ("OUTPUT_S3_PATH", out_dir.path().display().to_string()),
            ("OUTPUT_THUMBS_FILE_NAME", "frame.png".into()),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(out_dir.path().join("frame.png")).unwrap();
    assert_eq!(
        diff(&decode_png(&png), &cli_frame(&input, "2", None)),
        (0, 0)
    );

    // Flags work too, and a failure is one line and a non-zero code.
    let o = job(
        &[],
        &[
            "--input",
            &f.path("audio.m4a"),
            "--at",
            "0",
            "--output",
            &out_dir.path().join("x.png").display().to_string(),
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no video stream"), "{err}");
    let o = job(&[], &["--at", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("INPUT_VIDEO_FILE_URL"));
}

#[test]
fn s3_input_and_output_against_moto() {
    let f = fixtures();
    let moto = fargo_testkit::Moto::start();
    let env = moto.aws_env_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = fargo_runtime::storage::Storage::with_env(env.clone());
    moto.create_buckets(&["videos", "thumbs"]);
    let input = f.path("h264.mp4");
    rt.block_on(storage.write(
        "s3://videos/in/clip.mp4",
        std::fs::read(&input).unwrap().into(),
    ))
    .unwrap();

    let o = job(
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .chain([
                ("INPUT_VIDEO_FILE_URL", "s3://videos/in/clip.mp4".to_owned()),
                ("POSITION_TIME_DURATION", "25%".to_owned()),
                ("OUTPUT_S3_PATH", "thumbs/out".to_owned()),
                ("OUTPUT_THUMBS_FILE_NAME", "clip.png".to_owned()),
            ])
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = rt
        .block_on(storage.read_all("s3://thumbs/out/clip.png", 10 << 20))
        .unwrap();
    assert_eq!(
        diff(&decode_png(&png), &cli_frame(&input, "1", None)),
        (0, 0)
    );
    // Ranges and sizes through the same layer.
    assert_eq!(
        rt.block_on(storage.size("s3://thumbs/out/clip.png"))
            .unwrap(),
        png.len() as u64
    );
    assert_eq!(
        rt.block_on(storage.read_range("s3://thumbs/out/clip.png", 1..4))
            .unwrap()
            .as_ref(),
        b"PNG"
    );

    let o = job(
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>(),
        &[
            "--input",
            "s3://videos/in/nope.mp4",
            "--at",
            "1",
            "--output",
            "s3://thumbs/x.png",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("s3://videos/in/nope.mp4"));
}

/// Where [`RangeServer`] serves its file; anything else is 404.
const PATH: &str = "/videos/long.mp4";

/// A file served over HTTP/1.1 on 127.0.0.1 with byte ranges, recording the range each
/// request asked for and the bytes that actually left the server.
struct RangeServer {
    addr: std::net::SocketAddr,
    ranges: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RangeServer {
    fn start(data: Vec<u8>) -> RangeServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = std::sync::Arc::new(data);
        let ranges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (r, s) = (ranges.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (data, ranges, sent) = (data.clone(), r.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let head = line.starts_with("HEAD");
                        let mut start = 0u64;
                        let mut end = data.len() as u64 - 1;
                        let mut ranged = false;
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            let lower = h.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("range: bytes=") {
                                let (a, b) = v.trim().split_once('-').unwrap();
                                start = a.parse().unwrap();
                                if !b.is_empty() {
                                    end = b.parse::<u64>().unwrap().min(end);
                                }
                                ranged = true;
                            }
                        }
                        if line.split(' ').nth(1) != Some(PATH) {
                            let nf = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
                            if conn.write_all(nf.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                        ranges.lock().unwrap().push(start);
                        let len = end + 1 - start;
                        let status = if ranged {
                            format!(
                                "206 Partial Content\r\nContent-Range: bytes {start}-{end}/{}",
                                data.len()
                            )
                        } else {
                            "200 OK".to_owned()
                        };
                        let header = format!(
                            "HTTP/1.1 {status}\r\nAccept-Ranges: bytes\r\nContent-Type: video/mp4\r\nContent-Length: {len}\r\n\r\n"
                        );
                        if conn.write_all(header.as_bytes()).is_err() {
                            return;
                        }
                        if head {
                            continue;
                        }
                        for chunk in data[start as usize..=end as usize].chunks(16 * 1024) {
                            if conn.write_all(chunk).is_err() {
                                // The client went away (it seeks by opening a new range).
                                return;
                            }
                            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            // About 4 MB/s: slower than the client reads, so socket buffers
                            // stay near empty and `sent` is close to what it consumed.
                            std::thread::sleep(std::time::Duration::from_millis(4));
                        }
                    }
                });
            }
        });
        RangeServer { addr, ranges, sent }
    }
}

/// An http:// input is read with range requests: a deep position fetches the index and
/// the GOP it needs, not the whole file, and the frame is still the CLI's.
#[tokio::test(flavor = "multi_thread")]
async fn http_input_is_read_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.mp4");
    // 30 s, a keyframe every 10 s, large frames (so the bytes show which part was read),
    // the index at the end as the CLI writes it by default.
    let o = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=640x360:rate=25:duration=30")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "8",
            "-g",
            "250",
        ])
        .args(["-sc_threshold", "0", "-pix_fmt", "yuv420p"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = std::fs::read(&path).unwrap();
    let size = data.len() as u64;
    let server = RangeServer::start(data);
    let (mut c, _stop) = start(thumbnail::Config::default()).await;
    let r = c
        .extract(pb::ExtractRequest {
            input_uri: format!("http://{}{PATH}", server.addr),
            options: Some(opts(&["25"])),
        })
        .await
        .unwrap()
        .into_inner();
    let local = path.display().to_string();
    assert_eq!(
        diff(
            &decode_png(&r.thumbnails[0].image),
            &cli_frame(&local, "25", None)
        ),
        (0, 0)
    );
    let ranges = server.ranges.lock().unwrap().clone();
    let sent = server.sent.load(std::sync::atomic::Ordering::Relaxed);
    // The keyframe at 20 s lies about two thirds into the file: a range starts there.
    assert!(
        ranges.iter().any(|&s| s > size / 2 && s < size * 9 / 10),
        "no range request near the keyframe: {ranges:?} of {size} bytes"
    );
    assert!(
        sent < size / 2,
        "{sent} of {size} bytes were sent (ranges {ranges:?}): the decoder downloaded the file"
    );
    eprintln!("http: {sent} of {size} bytes sent, ranges from {ranges:?}");

    // A missing file over HTTP is NOT_FOUND and names the URL.
    let missing = format!("http://{}/videos/nope.mp4", server.addr);
    let e = c
        .extract(pb::ExtractRequest {
            input_uri: missing.clone(),
            options: Some(opts(&["1"])),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    assert!(e.message().contains(&missing), "{}", e.message());
}

/// https inputs: the server's certificate is verified (FFmpeg's default is not to), so
/// a self-signed one is refused with UNAVAILABLE naming the URL; with its certificate
/// configured as the CA (`tls_ca_file`) the same input works.
#[tokio::test(flavor = "multi_thread")]
async fn https_input_verifies_the_server_certificate() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl CLI missing: apt-get install openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // `openssl s_server -WWW` streams files without ranges: the index goes first.
    let clip = dir.path().join("clip.mp4");
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(f.path("h264.mp4"))
        .args(["-c", "copy", "-movflags", "+faststart"])
        .arg(&clip)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = fargo_testkit::free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(fargo_testkit::wait_for_port(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(20)
    ));
    let url = format!("https://127.0.0.1:{port}/clip.mp4");
    let req = || pb::ExtractRequest {
        input_uri: url.clone(),
        options: Some(opts(&["1.5"])),
    };

    let (mut c, _stop) = start(thumbnail::Config::default()).await;
    let e = c.extract(req()).await.unwrap_err();
    let mut config = thumbnail::Config::default();
    config.thumbnail.tls_ca_file = Some(cert.clone());
    let (mut trusting, _stop2) = start(config).await;
    let r = trusting.extract(req()).await;
    let _ = server.kill();
    let _ = server.wait();

    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains(&url), "{}", e.message());
    let r = r.unwrap().into_inner();
    let local = clip.display().to_string();
    assert_eq!(
        diff(
            &decode_png(&r.thumbnails[0].image),
            &cli_frame(&local, "1.5", None)
        ),
        (0, 0)
    );
}
