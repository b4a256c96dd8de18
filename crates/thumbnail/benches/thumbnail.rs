//! Thumbnail speed against the `ffmpeg` CLI (`ffmpeg -ss T -i IN -frames:v 1 OUT.png`,
//! one process per thumbnail, the original job), measured side by side in this run.
//!
//! `cargo bench -p thumbnail --bench thumbnail` — prints medians and ratios, and the
//! PNG sizes of both (thumbnails here are encoded by the `png` crate, not by FFmpeg's
//! PNG encoder as the CLI's are: same pixels, different bytes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fargo_proto::thumbnail::v1 as pb;
use pb::thumbnail_service_client::ThumbnailServiceClient;

const RUNS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> Duration {
    f(); // warm the page cache and the binary
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn cli(input: &Path, pos: &str, out: &Path) {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-ss", pos, "-i"])
        .arg(input)
        .args(["-frames:v", "1"])
        .arg(out));
}

fn job(input: &Path, pos: &str, out: &Path) {
    run(Command::new(env!("CARGO_BIN_EXE_thumbnail"))
        .args(["job", "--at", pos, "--input"])
        .arg(input)
        .arg("--output")
        .arg(out));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, ours: Duration, base: Duration, target: &str) {
    println!(
        "{what:<58} fargo {:>8.1} ms   ffmpeg CLI {:>8.1} ms   ratio {:>5.2}x  (target {target})",
        ms(ours),
        ms(base),
        base.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("720p.mp4");
    // 20 s of 720p H.264, keyframes every 10 s (a long GOP, like many camera files).
    let input_s = input.to_string_lossy();
    fargo_testkit::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=25:duration=20",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "250",
        "-keyint_min",
        "250",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        &input_s,
    ])
    .unwrap();
    let out = dir.path().join("out.png");
    let ours = dir.path().join("ours.png");
    println!("input: 1280x720 H.264, 20 s, keyframes at 0 s and 10 s; {RUNS} runs each, medians\n");

    let key = "10";
    let deep = "9.6";
    let c_key = time(|| cli(&input, key, &out));
    let j_key = time(|| job(&input, key, &ours));
    report(
        "one thumbnail as a job process, on a keyframe (10 s)",
        j_key,
        c_key,
        ">= 1.5x",
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    println!(
        "{:<58} fargo {:>8} B    ffmpeg CLI {:>8} B",
        "  its PNG",
        size(&ours),
        size(&out)
    );
    let c_deep = time(|| cli(&input, deep, &out));
    let j_deep = time(|| job(&input, deep, &ours));
    report(
        "one thumbnail as a job process, deep in a GOP (9.6 s)",
        j_deep,
        c_deep,
        ">= 1.0x",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let positions: Vec<String> = (0..10).map(|i| format!("{}", 1 + 2 * i)).collect();
    let c_ten = time(|| {
        for p in &positions {
            cli(&input, p, &out);
        }
    });
    // Frame threads per decoder, and decoders per request (positions from different
    // keyframes on separate threads).
    for (threads, decoders) in [(1usize, 1usize), (1, 2), (2, 2)] {
        let mut config = thumbnail::Config::default();
        config.thumbnail.decoder_threads = threads;
        config.thumbnail.decoders_per_request = decoders;
        let (mut client, _stop) = rt.block_on(start(config));
        let uri = input.display().to_string();
        let mut call = |positions: &[String]| {
            let r = rt
                .block_on(client.extract(pb::ExtractRequest {
                    input_uri: uri.clone(),
                    options: Some(pb::ExtractOptions {
                        positions: positions.to_vec(),
                        ..Default::default()
                    }),
                }))
                .unwrap()
                .into_inner();
            assert_eq!(r.thumbnails.len(), positions.len());
        };
        let s_ten = time(|| call(&positions));
        let s_key = time(|| call(&[key.to_owned()]));
        let s_deep = time(|| call(&[deep.to_owned()]));
        println!("\nservice, decoder frame threads = {threads}, decoders per request = {decoders}");
        report(
            "  ten positions (1,3,..,19 s) in one request vs ten CLI runs",
            s_ten,
            c_ten,
            ">= 5x",
        );
        report(
            "  warm service, one thumbnail on a keyframe",
            s_key,
            c_key,
            ">= 4x",
        );
        report(
            "  warm service, one thumbnail deep in a GOP",
            s_deep,
            c_deep,
            "-",
        );
    }
}

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
    loop {
        if let Ok(c) = ThumbnailServiceClient::connect(format!("http://{addr}")).await {
            return (c, tx);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
