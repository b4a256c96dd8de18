#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The gRPC service over a real socket: counting, bad input with the right status codes,
//! images by URI (local files and S3 on moto), load shedding, and staying up afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use coin_value::{Config, synth};
use fargo_proto::coinvalue::v1::coin_value_service_client::CoinValueServiceClient;
use fargo_proto::coinvalue::v1::{CountRequest, count_request};
use fargo_runtime::storage::Storage;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

async fn start(config: Config) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    start_with(config, Storage::from_env()).await
}

async fn start_with(
    config: Config,
    storage: Storage,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(coin_value::serve_with_storage(
        listener,
        config,
        storage,
        async {
            let _ = rx.await;
        },
    ));
    for _ in 0..100 {
        if fargo_runtime::cli::check_health(addr, "", Duration::from_secs(1)).await == Ok(true) {
            return (addr, tx);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("service did not become healthy");
}

async fn client(addr: SocketAddr) -> CoinValueServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    CoinValueServiceClient::new(ch)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20)
}

fn data(bytes: Vec<u8>) -> CountRequest {
    CountRequest {
        image: Some(count_request::Image::Data(bytes)),
        annotate: false,
    }
}

/// A PNG whose header claims 100000 x 100000 pixels, in a few dozen bytes.
fn png_bomb() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // The start of a compressed stream, as a real bomb has (deflate of nothing here).
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    v.extend_from_slice(&8u32.to_be_bytes());
    v.extend_from_slice(&idat);
    v.extend_from_slice(&crc32(&idat).to_be_bytes());
    v
}

/// A small real JPEG whose frame header is rewritten to claim 65000 x 65000 pixels.
fn jpeg_bomb() -> Vec<u8> {
    let mut j = synth::encode_jpeg(&image::RgbImage::new(16, 16), 80, 1);
    let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    j[sof + 5..sof + 7].copy_from_slice(&65_000u16.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&65_000u16.to_be_bytes());
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_over_grpc_and_refuses_bad_input_with_clear_errors() {
    let mut config = Config::default();
    config.coins.max_image_bytes = 4 << 20;
    config.server.max_message_bytes = 5 << 20;
    let (addr, _stop) = start(config).await;
    let mut c = client(addr).await;

    // A real count: the same answer as the library, with an annotated picture.
    let photo = synth::render(3, 1600, 1200);
    let direct =
        coin_value::count(&photo.jpeg, &coin_value::DecodeLimits::default(), false).unwrap();
    let mut req = data(photo.jpeg.clone());
    req.annotate = true;
    let r = c.count(req).await.unwrap().into_inner();
    assert_eq!(r.total_cents, direct.total_cents);
    assert_eq!(r.coins.len(), direct.coins.len());
    assert!(
        r.coins
            .iter()
            .all(|k| k.value_cents > 0 && (0.0..=1.0).contains(&k.confidence))
    );
    assert_eq!((r.image_width, r.image_height), (1600, 1200));
    assert!(image::load_from_memory(&r.annotated_jpeg).is_ok());

    // No coins is an answer: 0 cents.
    let blank = synth::encode_jpeg(
        &image::RgbImage::from_pixel(800, 600, image::Rgb([200, 196, 190])),
        85,
        1,
    );
    let r = c.count(data(blank)).await.unwrap().into_inner();
    assert_eq!((r.total_cents, r.coins.len()), (0, 0));

    let cases: Vec<(&str, CountRequest, Code, &str)> = vec![
        (
            "no image",
            CountRequest::default(),
            Code::InvalidArgument,
            "no image",
        ),
        (
            "not an image",
            data(b"hello, this is text".to_vec()),
            Code::InvalidArgument,
            "not a JPEG, PNG or WebP",
        ),
        (
            "truncated",
            data(photo.jpeg[..photo.jpeg.len() / 3].to_vec()),
            Code::InvalidArgument,
            "JPEG",
        ),
        (
            "png bomb",
            data(png_bomb()),
            Code::ResourceExhausted,
            "100000 x 100000",
        ),
        (
            "jpeg bomb",
            data(jpeg_bomb()),
            Code::ResourceExhausted,
            "65000 x 65000",
        ),
        (
            "over image limit",
            data(vec![0xFF; (4 << 20) + 10]),
            Code::ResourceExhausted,
            "images up to",
        ),
        (
            "over message limit",
            data(vec![0xFF; 6 << 20]),
            Code::ResourceExhausted,
            "5242880",
        ),
    ];
    for (name, req, code, msg) in cases {
        let e = c.count(req).await.expect_err(name);
        assert_eq!(e.code(), code, "{name}: {e:?}");
        assert!(
            e.message().contains(msg),
            "{name}: message {:?} lacks {msg:?}",
            e.message()
        );
    }

    // Still up and still right.
    assert_eq!(
        fargo_runtime::cli::check_health(addr, "", Duration::from_secs(2)).await,
        Ok(true)
    );
    let r = c
        .count(data(photo.jpeg.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total_cents, direct.total_cents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheds_load_past_the_limit_with_resource_exhausted() {
    let mut config = Config::default();
    config.server.concurrency_limit = 1;
    config.server.shed_load = true;
    config.coins.workers = 1;
    let (addr, _stop) = start(config).await;
    let photo = synth::render(5, 2000, 1500);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = client(addr).await;
        let req = data(photo.jpeg.clone());
        calls.push(tokio::spawn(async move { c.count(req).await }));
    }
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => shed += 1,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    // Health answers even when every slot is busy.
    assert_eq!(
        fargo_runtime::cli::check_health(addr, "", Duration::from_secs(2)).await,
        Ok(true)
    );
}

fn uri(u: &str) -> CountRequest {
    CountRequest {
        image: Some(count_request::Image::Uri(u.to_owned())),
        annotate: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_images_by_uri_from_files_and_s3_with_bounded_reads() {
    let moto = fargo_testkit::Moto::start();
    let env = moto.aws_env_owned();
    let storage = Storage::with_env(env);
    moto.create_buckets(&["photos"]);

    let photo = synth::render(3, 1000, 750);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coins.jpg");
    std::fs::write(&file, &photo.jpeg).unwrap();
    let big = dir.path().join("big.jpg");
    std::fs::write(&big, vec![0xFF; 3 << 20]).unwrap();
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not a picture").unwrap();
    storage
        .write("s3://photos/in/coins.jpg", photo.jpeg.clone().into())
        .await
        .unwrap();
    storage
        .write("s3://photos/in/big.jpg", vec![0xFF; 3 << 20].into())
        .await
        .unwrap();

    let mut config = Config::default();
    config.coins.max_image_bytes = 2 << 20;
    let (addr, _stop) = start_with(config, storage).await;
    let mut c = client(addr).await;
    let want = c
        .count(data(photo.jpeg.clone()))
        .await
        .unwrap()
        .into_inner();
    let file_uri = format!("file://{}", file.display());
    for u in [
        file.display().to_string(),
        file_uri,
        "s3://photos/in/coins.jpg".into(),
    ] {
        let r = c.count(uri(&u)).await.unwrap().into_inner();
        assert_eq!(
            r, want,
            "{u}: a different answer than for the same bytes inline"
        );
    }

    let cases: Vec<(String, Code, &str)> = vec![
        (
            dir.path().join("missing.jpg").display().to_string(),
            Code::NotFound,
            "does not exist",
        ),
        (
            "s3://photos/in/missing.jpg".into(),
            Code::NotFound,
            "does not exist",
        ),
        (
            big.display().to_string(),
            Code::ResourceExhausted,
            "more than the 2097152 allowed",
        ),
        (
            "s3://photos/in/big.jpg".into(),
            Code::ResourceExhausted,
            "more than the 2097152 allowed",
        ),
        (
            "ftp://example.com/coins.jpg".into(),
            Code::InvalidArgument,
            "unknown scheme `ftp`",
        ),
        (
            text.display().to_string(),
            Code::InvalidArgument,
            "not a JPEG, PNG or WebP",
        ),
    ];
    for (u, code, msg) in cases {
        let e = c.count(uri(&u)).await.expect_err(&u);
        assert_eq!(e.code(), code, "{u}: {e:?}");
        assert!(
            e.message().contains(msg),
            "{u}: message {:?} lacks {msg:?}",
            e.message()
        );
    }
    assert_eq!(
        fargo_runtime::cli::check_health(addr, "", Duration::from_secs(2)).await,
        Ok(true)
    );
}
