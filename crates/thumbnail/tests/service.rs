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
    let env: Vec<(String, String)> = moto
        .aws_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = fargo_runtime::storage::Storage::with_env(env.clone());
    // moto needs the bucket first; create it with a plain S3 CreateBucket.
    let status = Command::new("python3")
        .args(["-c", &format!("import urllib.request as u; u.urlopen(u.Request('{}/videos', method='PUT')).read(); u.urlopen(u.Request('{}/thumbs', method='PUT')).read()", moto.endpoint(), moto.endpoint())])
        .status()
        .unwrap();
    assert!(status.success());
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
