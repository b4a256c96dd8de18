//! The one engine both modes use: open the input, seek to the keyframe at or before
//! each position, decode forward to the frame `ffmpeg -ss T -i IN -frames:v 1` would
//! write, rotate as the display matrix says, scale, encode. Blocking: callers run it on
//! a blocking thread and bound how many run at once.
//!
//! Frames go to RGB24 the way the CLI's filter graph takes them (autorotate, then
//! `scale` with bicubic; see [`crate::convert`]), so the pixels match the CLI's for
//! the same size.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ff::format::Pixel;
use ff::{Rational, codec, format, frame, media};
use ffmpeg_next as ff;

use crate::convert::{Converter, Orient};
use crate::encode::{self, ImageFormat};
use crate::position::Position;

/// How the frame for a position is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The frame shown at the position, as the `ffmpeg` CLI's input seek picks it.
    #[default]
    Accurate,
    /// The keyframe at or before the position: no decoding past it.
    Keyframe,
    /// From the position on, the first frame that is not black or nearly uniform.
    Representative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Inside the box, aspect preserved.
    #[default]
    Contain,
    /// Fill the box, aspect preserved, the overflow cropped from the centre.
    Cover,
}

/// Target size: 0 means "from the other side, aspect preserved" or, both 0, the source size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpriteSpec {
    pub frames: u32,
    pub columns: u32,
    /// Width of one tile; its height follows the aspect.
    pub tile_width: u32,
}

/// What to extract from one input.
#[derive(Debug, Clone)]
pub struct Request {
    /// As asked (for the response) and parsed.
    pub positions: Vec<(String, Position)>,
    pub mode: Mode,
    pub format: ImageFormat,
    /// 1-100; 0 means the format's default.
    pub quality: u8,
    pub size: Size,
    pub sprite: Option<SpriteSpec>,
}

/// Resource bounds of one extraction, and how network inputs are read.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest decoded frame (width x height) accepted; beyond it the input is refused
    /// before any frame is decoded.
    pub max_frame_pixels: u64,
    /// Largest image produced (thumbnail or sprite sheet).
    pub max_output_pixels: u64,
    /// Decoder frame threads for requests that decode more than a few frames (several
    /// positions, deep in a GOP); 1 disables threading. 2 by default: measured on 2 busy
    /// cores (benches/thumbnail.rs), two frame threads with two decoders per request
    /// made ten positions ~1.5x faster than one thread.
    pub decoder_threads: usize,
    /// Decoders one extraction may run at once, each on its own thread, for positions
    /// that start from different keyframes.
    pub decoders: usize,
    /// Frames examined past the position in representative mode.
    pub representative_scan: u32,
    /// CA bundle (PEM) that https inputs are verified against, instead of the system's.
    pub tls_ca_file: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_pixels: 8192 * 4320,
            max_output_pixels: 16_777_216,
            decoder_threads: 2,
            decoders: 2,
            representative_scan: 90,
            tls_ca_file: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Thumb {
    pub position: String,
    pub frame_time: f64,
    pub width: u32,
    pub height: u32,
    pub image: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Sprite {
    pub image: Vec<u8>,
    pub columns: u32,
    pub rows: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Start and end (seconds) of the span each tile previews, in tile order.
    pub spans: Vec<(f64, f64)>,
}

impl Sprite {
    /// A WebVTT storyboard whose cues point into `sprite_name` with `#xywh=`.
    pub fn webvtt(&self, sprite_name: &str) -> String {
        let mut out = String::from("WEBVTT\n");
        for (i, (start, end)) in self.spans.iter().enumerate() {
            let i = i as u32;
            let (x, y) = (
                (i % self.columns) * self.tile_width,
                (i / self.columns) * self.tile_height,
            );
            out.push_str(&format!(
                "\n{} --> {}\n{sprite_name}#xywh={x},{y},{},{}\n",
                vtt_time(*start),
                vtt_time(*end),
                self.tile_width,
                self.tile_height
            ));
        }
        out
    }
}

fn vtt_time(s: f64) -> String {
    let ms = (s * 1000.0).round().max(0.0) as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[derive(Debug, Clone)]
pub struct Output {
    pub thumbnails: Vec<Thumb>,
    pub sprite: Option<Sprite>,
    pub duration: Option<f64>,
}

/// Why an input gave no image; each names the input.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{input}: not found")]
    NotFound { input: String },
    #[error("{input}: {reason}")]
    Invalid { input: String, reason: String },
    #[error("{input}: no video stream (the file has only audio, subtitles or data)")]
    NoVideo { input: String },
    #[error(
        "{input}: the video is {width}x{height}, more than the {max} pixels a frame may have here"
    )]
    FrameTooLarge {
        input: String,
        width: u32,
        height: u32,
        max: u64,
    },
    #[error("{input}: position {position} is past the end of the video ({detail})")]
    PastEnd {
        input: String,
        position: String,
        detail: String,
    },
    #[error("{input}: {reason}")]
    Unsupported { input: String, reason: String },
    #[error("{input}: {reason}")]
    Unreachable { input: String, reason: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{input}: {reason}")]
    Internal { input: String, reason: String },
}

static INIT: Once = Once::new();

/// Initialises FFmpeg once and keeps its own logging quiet: errors reach callers as
/// [`EngineError`]s with the input named, not as lines on stderr.
pub fn init() {
    INIT.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

const AV_TIME_BASE: i64 = 1_000_000;

/// `a * b / c` rounded to nearest, halves away from zero (FFmpeg's `AV_ROUND_NEAR_INF`,
/// `av_rescale`): timestamps here, the `scale` filter's sizes in `convert`.
pub(crate) fn rescale(a: i64, b: i64, c: i64) -> i64 {
    let (n, c) = (i128::from(a) * i128::from(b), i128::from(c.max(1)));
    let r = if n >= 0 {
        (n + c / 2) / c
    } else {
        -((-n + c / 2) / c)
    };
    r as i64
}

fn us_to_tb(us: i64, tb: Rational) -> i64 {
    rescale(
        us,
        i64::from(tb.denominator()),
        AV_TIME_BASE * i64::from(tb.numerator()),
    )
}

fn tb_to_secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
}

/// One item of work in decode order.
#[derive(Debug, Clone, Copy)]
enum Target {
    Thumb(usize),
    Tile(usize),
}

struct Picked {
    frame: frame::Video,
    ts: i64,
}

/// An opened input: its demuxer, the decoder of the video stream chosen, and what
/// positions are resolved against.
struct Source {
    ictx: format::context::Input,
    decoder: ff::decoder::Video,
    /// The stream's codec parameters, to reopen the decoder with threads.
    params: codec::Parameters,
    index: usize,
    tb: Rational,
    display: Option<[i32; 9]>,
    start_us: i64,
    duration_us: Option<i64>,
    /// Seek 3/23 s early, as the CLI does when timestamps may be reordered.
    seek_backoff: bool,
    /// The codec's "non-reference" flag is exact, so frames before a position may be
    /// skipped without changing any later frame's pixels.
    skip_nonref: bool,
}

impl Source {
    fn open(input: &str, name: &str, limits: &Limits) -> Result<Self, EngineError> {
        let mut opts = ff::Dictionary::new();
        // Network inputs: give up on a stalled server rather than hold a decode slot forever.
        opts.set("rw_timeout", "30000000");
        if input.starts_with("https://") {
            // FFmpeg does not check the server's certificate unless told to.
            opts.set("tls_verify", "1");
            if let Some(ca) = &limits.tls_ca_file {
                opts.set("ca_file", ca);
            }
        }
        let ictx = format::input_with_dictionary(input, opts).map_err(|e| open_error(name, e))?;

        let stream = ictx
            .streams()
            .filter(|s| s.parameters().medium() == media::Type::Video)
            .filter(|s| {
                !s.disposition()
                    .contains(format::stream::Disposition::ATTACHED_PIC)
            })
            .max_by_key(|s| {
                // The CLI's choice among several video streams is the largest; so is ours.
                let (w, h) = dimensions(&s.parameters());
                u64::from(w) * u64::from(h)
            })
            .ok_or_else(|| EngineError::NoVideo {
                input: name.to_owned(),
            })?;
        let index = stream.index();
        let tb = stream.time_base();
        let display = display_matrix(&stream);
        let params = stream.parameters();
        let video_delay = has_video_delay(&params);
        // H.264's nal_ref_idc and VP9's refresh mask say exactly which frames are never
        // referenced; HEVC's flag is per temporal sub-layer, so it is left out.
        let skip_nonref = matches!(params.id(), codec::Id::H264 | codec::Id::VP9);

        // Refuse a huge stream before the decoder allocates anything for it.
        let (w, h) = dimensions(&params);
        check_size(name, w, h, limits)?;
        let decoder = open_decoder(&params, name, 1)?;

        let start_us = match start_time(&ictx) {
            t if t == ff::ffi::AV_NOPTS_VALUE => 0,
            t => t,
        };
        let duration_us = (ictx.duration() > 0).then(|| ictx.duration());
        let seek_backoff = !ictx.format().flags_contains_seek_to_pts() && video_delay;
        Ok(Self {
            ictx,
            decoder,
            params,
            index,
            tb,
            display,
            start_us,
            duration_us,
            seek_backoff,
            skip_nonref,
        })
    }

    /// Reopens the decoder (before anything is decoded) with `threads` frame threads.
    fn use_threads(&mut self, name: &str, threads: usize) -> Result<(), EngineError> {
        if threads > 1 {
            self.decoder = open_decoder(&self.params, name, threads)?;
        }
        Ok(())
    }

    /// Where the seek for a position `us` after the start goes (AV_TIME_BASE units).
    fn seek_us(&self, us: i64) -> i64 {
        let us = us + self.start_us;
        if self.seek_backoff {
            // Both land on the same keyframe as the CLI this way (it matters for open GOPs).
            us - 3 * AV_TIME_BASE / 23
        } else {
            us
        }
    }
}

fn open_decoder(
    params: &codec::Parameters,
    name: &str,
    threads: usize,
) -> Result<ff::decoder::Video, EngineError> {
    let mut ctx =
        codec::Context::from_parameters(params.clone()).map_err(|e| EngineError::Invalid {
            input: name.to_owned(),
            reason: format!("cannot read the video stream's parameters: {e}"),
        })?;
    if threads > 1 {
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: threads,
            safe: false,
        });
    }
    ctx.decoder().video().map_err(|e| EngineError::Unsupported {
        input: name.to_owned(),
        reason: format!("FFmpeg has no decoder for this video codec: {e}"),
    })
}

/// Frame threads for this request: they pay off when it decodes more than a few
/// frames, while for one thumbnail at a keyframe they only add start-up and frames in
/// flight (measured: the job process got slower with them).
fn frame_threads(src: &Source, items: &[(i64, Target)], mode: Mode, configured: usize) -> usize {
    if configured <= 1 || mode == Mode::Keyframe {
        return 1;
    }
    if items.len() > 1 || mode == Mode::Representative {
        return configured;
    }
    let deep = items.iter().any(|(us, _)| {
        let want = us_to_tb(us + src.start_us, src.tb);
        let seek = us_to_tb(src.seek_us(*us), src.tb);
        index_keyframe_before(&src.ictx, src.index, seek)
            .is_none_or(|key| tb_to_secs(want - key, src.tb) > 0.5)
    });
    if deep { configured } else { 1 }
}

/// Extracts what `req` asks from `input` (a path or URL FFmpeg opens itself);
/// `name` is how errors refer to it. Checks `cancel` between packets.
///
/// Positions are decoded in time order, each frame at most once; with
/// `limits.decoders` > 1, runs of positions that start at different keyframes go to
/// separate decoders on their own threads.
pub fn extract(
    input: &str,
    name: &str,
    req: &Request,
    limits: &Limits,
    cancel: &AtomicBool,
) -> Result<Output, EngineError> {
    init();
    let invalid = |reason: String| EngineError::Invalid {
        input: name.to_owned(),
        reason,
    };
    let mut src = Source::open(input, name, limits)?;
    let duration_us = src.duration_us;

    // Resolve every position, then work through them in time order.
    let mut items: Vec<(i64, Target)> = Vec::new();
    for (i, (text, pos)) in req.positions.iter().enumerate() {
        let us = pos.resolve(duration_us).ok_or_else(|| {
            invalid(format!(
                "position `{text}` is a percentage but the file does not say how long it is"
            ))
        })?;
        if let Some(d) = duration_us
            && us >= d
            && !matches!(pos, Position::Percent(p) if *p >= 100.0)
        {
            return Err(EngineError::PastEnd {
                input: name.to_owned(),
                position: text.clone(),
                detail: format!("the video is {:.3} s long", d as f64 / 1e6),
            });
        }
        items.push((us, Target::Thumb(i)));
    }
    let mut spans = Vec::new();
    if let Some(sp) = req.sprite {
        let d = duration_us.ok_or_else(|| {
            invalid("a sprite sheet needs the duration, and the file does not say it".into())
        })?;
        for j in 0..sp.frames {
            let (a, b) = (
                d * i64::from(j) / i64::from(sp.frames),
                d * i64::from(j + 1) / i64::from(sp.frames),
            );
            spans.push((a as f64 / 1e6, b as f64 / 1e6));
            items.push(((a + b) / 2, Target::Tile(j as usize)));
        }
    }
    items.sort_by_key(|(us, _)| *us);

    let orient = Orient::from_display(&src.display);
    let chains = Chains {
        orient,
        main: req.size,
        tile: req.sprite.map(|sp| Size {
            width: sp.tile_width,
            height: 0,
            fit: Fit::Contain,
        }),
    };
    let threads = frame_threads(&src, &items, req.mode, limits.decoder_threads);
    src.use_threads(name, threads)?;
    let runs = split(&src, &items, req.mode, limits.decoders);
    let parts: Vec<Result<Decoded, EngineError>> =
        match runs.split_first() {
            Some((first, rest)) if !rest.is_empty() => std::thread::scope(|s| {
                let chains = &chains;
                let others: Vec<_> = rest
                    .iter()
                    .map(|run| {
                        s.spawn(move || {
                            let mut own = Source::open(input, name, limits)?;
                            own.use_threads(name, threads)?;
                            decode(&mut own, name, req, limits, cancel, run, chains)
                        })
                    })
                    .collect();
                let mut parts = vec![decode(&mut src, name, req, limits, cancel, first, chains)];
                for h in others {
                    parts.push(h.join().unwrap_or_else(|_| {
                        Err(internal(name, "a decoder thread panicked".into()))
                    }));
                }
                parts
            }),
            _ => vec![decode(&mut src, name, req, limits, cancel, &items, &chains)],
        };

    let mut thumbs: Vec<Option<Thumb>> = vec![None; req.positions.len()];
    let mut tiles: Vec<Option<frame::Video>> = vec![None; spans.len()];
    for part in parts {
        // The earliest run's error is the one a single decoder would have hit first.
        let part = part?;
        for (i, t) in part.thumbs {
            thumbs[i] = Some(t);
        }
        for (j, t) in part.tiles {
            tiles[j] = Some(t);
        }
    }
    let sprite = match req.sprite {
        Some(sp) => Some(build_sprite(name, sp, tiles, spans, req, limits)?),
        None => None,
    };
    Ok(Output {
        thumbnails: thumbs.into_iter().flatten().collect(),
        sprite,
        duration: duration_us.map(|d| d as f64 / 1e6),
    })
}

/// How frames become thumbnails and sprite tiles.
struct Chains {
    orient: Orient,
    main: Size,
    tile: Option<Size>,
}

/// What one decoder produced: thumbnails and tiles by their index in the request.
#[derive(Default)]
struct Decoded {
    thumbs: Vec<(usize, Thumb)>,
    tiles: Vec<(usize, frame::Video)>,
}

/// Cuts the work (in time order) into at most `n` runs, each starting at a different
/// keyframe and balanced by how many frames it decodes, so that separate decoders can
/// take them at once and still no frame is decoded twice. One run without an index.
fn split<'a>(
    src: &Source,
    items: &'a [(i64, Target)],
    mode: Mode,
    n: usize,
) -> Vec<&'a [(i64, Target)]> {
    if n < 2 || items.len() < 2 {
        return vec![items];
    }
    // (first item, keyframe, cost) of each group of items sharing a keyframe.
    let mut groups: Vec<(usize, i64, f64)> = Vec::new();
    for (i, (us, _)) in items.iter().enumerate() {
        let want = us_to_tb(us + src.start_us, src.tb);
        let Some(key) =
            index_keyframe_before(&src.ictx, src.index, us_to_tb(src.seek_us(*us), src.tb))
        else {
            return vec![items];
        };
        // Seconds decoded from the keyframe, plus a little for filtering and encoding.
        let span = if mode == Mode::Keyframe {
            0.0
        } else {
            tb_to_secs(want - key, src.tb).max(0.0)
        };
        match groups.last_mut() {
            Some(g) if g.1 == key => g.2 = g.2.max(span) + 0.1,
            _ => groups.push((i, key, span + 0.1)),
        }
    }
    let n = n.min(groups.len());
    if n < 2 {
        return vec![items];
    }
    let total: f64 = groups.iter().map(|g| g.2).sum();
    let mut runs = Vec::with_capacity(n);
    let (mut start, mut acc) = (0usize, 0.0);
    for (k, g) in groups.iter().enumerate() {
        if k > 0 && runs.len() + 1 < n && acc >= total * (runs.len() + 1) as f64 / n as f64 {
            runs.push(&items[start..g.0]);
            start = g.0;
        }
        acc += g.2;
    }
    runs.push(&items[start..]);
    runs
}

/// Decodes one run of items (in time order) from `src`.
fn decode(
    src: &mut Source,
    name: &str,
    req: &Request,
    limits: &Limits,
    cancel: &AtomicBool,
    items: &[(i64, Target)],
    chains: &Chains,
) -> Result<Decoded, EngineError> {
    let invalid = |reason: String| EngineError::Invalid {
        input: name.to_owned(),
        reason,
    };
    let (tb, start_us, duration_us) = (src.tb, src.start_us, src.duration_us);
    let seek_for: Vec<i64> = items.iter().map(|(us, _)| src.seek_us(*us)).collect();
    let mut session = Session {
        ictx: &mut src.ictx,
        decoder: &mut src.decoder,
        index: src.index,
        cancel,
        eof_sent: false,
        drained: false,
        bad_packets: 0,
        last_ts: None,
        skip_nonref: src.skip_nonref,
        skip_before: None,
        skipping: false,
    };
    let mut out = Decoded::default();
    let mut main_conv = Converter::new(chains.orient, chains.main);
    let mut tile_conv = Converter::new(chains.orient, chains.tile.unwrap_or_default());
    let mut picked: Option<Picked> = None;

    for (&(us, target), &seek_us) in items.iter().zip(&seek_for) {
        let want = us_to_tb(us + start_us, tb);
        let mode = if matches!(target, Target::Tile(_)) && req.mode == Mode::Representative {
            Mode::Accurate
        } else {
            req.mode
        };
        let reuse = picked
            .as_ref()
            .is_some_and(|p| p.ts >= want && mode != Mode::Keyframe);
        if !reuse {
            let need_seek = mode == Mode::Keyframe
                || match session.last_ts {
                    None => true,
                    Some(cur) => {
                        want < cur || session.keyframe_after(cur, us_to_tb(seek_us, tb), tb)
                    }
                };
            if need_seek {
                session.seek(seek_us)?;
            }
            // Frames before the position are only decoded as references for later ones.
            session.skip_before = (mode != Mode::Keyframe).then_some(want);
            let frame = match mode {
                Mode::Keyframe => session.next_frame(name)?.map(|f| {
                    let ts = f.timestamp().unwrap_or(want);
                    Picked { frame: f, ts }
                }),
                Mode::Accurate => session.frame_at(name, want)?,
                Mode::Representative => session.representative(
                    name,
                    want,
                    limits.representative_scan,
                    &mut main_conv,
                )?,
            };
            let Some(frame) = frame else {
                let detail = match (session.last_ts, duration_us) {
                    (Some(last), Some(d))
                        if session.bad_packets == 0
                            && tb_to_secs(last, tb) + 1.0 < d as f64 / 1e6 =>
                    {
                        return Err(invalid(format!(
                            "the data ends at {:.3} s but the file says it lasts {:.3} s: truncated?",
                            tb_to_secs(last, tb),
                            d as f64 / 1e6
                        )));
                    }
                    (Some(last), _) if session.bad_packets > 0 => {
                        return Err(invalid(format!(
                            "corrupt video data: no decodable frame after {:.3} s",
                            tb_to_secs(last, tb)
                        )));
                    }
                    (None, _) => {
                        return Err(invalid(
                            "no frame could be decoded: the file is corrupt or truncated".into(),
                        ));
                    }
                    (Some(last), _) => {
                        format!("the last frame is at {:.3} s", tb_to_secs(last, tb))
                    }
                };
                let position = match target {
                    Target::Thumb(i) => req.positions[i].0.clone(),
                    Target::Tile(j) => format!("{:.3} (sprite tile {j})", us as f64 / 1e6),
                };
                return Err(EngineError::PastEnd {
                    input: name.to_owned(),
                    position,
                    detail,
                });
            };
            picked = Some(frame);
        }
        let Some(p) = picked.as_ref() else { continue };
        check_size(name, p.frame.width(), p.frame.height(), limits)?;
        match target {
            Target::Thumb(i) => {
                let rgb = main_conv.run(&p.frame).map_err(|r| internal(name, r))?;
                check_output(name, &rgb, limits)?;
                let image = encode::encode(&rgb, req.format, req.quality)
                    .map_err(|reason| internal(name, reason))?;
                out.thumbs.push((
                    i,
                    Thumb {
                        position: req.positions[i].0.clone(),
                        frame_time: tb_to_secs(p.ts, tb) - start_us as f64 / 1e6,
                        width: rgb.width(),
                        height: rgb.height(),
                        image,
                    },
                ));
            }
            Target::Tile(j) => {
                let tile = tile_conv.run(&p.frame).map_err(|r| internal(name, r))?;
                out.tiles.push((j, tile));
            }
        }
    }
    Ok(out)
}

fn internal(name: &str, reason: String) -> EngineError {
    EngineError::Internal {
        input: name.to_owned(),
        reason,
    }
}

fn check_size(name: &str, w: u32, h: u32, limits: &Limits) -> Result<(), EngineError> {
    if u64::from(w) * u64::from(h) > limits.max_frame_pixels {
        return Err(EngineError::FrameTooLarge {
            input: name.to_owned(),
            width: w,
            height: h,
            max: limits.max_frame_pixels,
        });
    }
    Ok(())
}

fn check_output(name: &str, f: &frame::Video, limits: &Limits) -> Result<(), EngineError> {
    if u64::from(f.width()) * u64::from(f.height()) > limits.max_output_pixels {
        return Err(EngineError::Invalid {
            input: name.to_owned(),
            reason: format!(
                "the image would be {}x{}, more than the {} pixels allowed",
                f.width(),
                f.height(),
                limits.max_output_pixels
            ),
        });
    }
    Ok(())
}

fn open_error(name: &str, e: ff::Error) -> EngineError {
    let input = name.to_owned();
    match e {
        ff::Error::HttpNotFound => EngineError::NotFound { input },
        ff::Error::Other { errno } if errno == libc_enoent() => EngineError::NotFound { input },
        ff::Error::InvalidData => EngineError::Invalid {
            input,
            reason: "not a video file FFmpeg can read (unknown format or corrupt header)".into(),
        },
        ff::Error::Eof => EngineError::Invalid {
            input,
            reason: "empty or truncated before the first frame".into(),
        },
        ff::Error::HttpForbidden | ff::Error::HttpUnauthorized => EngineError::Invalid {
            input,
            reason: "the server refused access".into(),
        },
        ff::Error::Other { errno } if is_network(input.as_str()) && NET_ERRNOS.contains(&errno) => {
            EngineError::Unreachable {
                input,
                reason: format!(
                    "cannot read it from the server ({}: connection refused or reset, timed out, \
                     or an https server whose certificate is not trusted)",
                    ff::Error::Other { errno }
                ),
            }
        }
        ff::Error::ProtocolNotFound => EngineError::Invalid {
            input,
            reason: "unsupported URL scheme".into(),
        },
        other => EngineError::Invalid {
            input,
            reason: format!(
                "FFmpeg cannot open it as a video (an unsupported or invalid stream, such as a frame size FFmpeg refuses): {other}"
            ),
        },
    }
}

const fn libc_enoent() -> i32 {
    2
}

/// EIO (also a failed TLS handshake or certificate check), ECONNRESET, ETIMEDOUT,
/// ECONNREFUSED.
const NET_ERRNOS: [i32; 4] = [5, 104, 110, 111];

fn is_network(name: &str) -> bool {
    name.starts_with("http://") || name.starts_with("https://") || name.starts_with("s3://")
}

/// The decode state of one input.
struct Session<'a> {
    ictx: &'a mut format::context::Input,
    decoder: &'a mut ff::decoder::Video,
    index: usize,
    cancel: &'a AtomicBool,
    eof_sent: bool,
    drained: bool,
    /// Packets the decoder refused; non-zero means the input is at least partly corrupt.
    bad_packets: u32,
    /// Timestamp of the last frame decoded.
    last_ts: Option<i64>,
    skip_nonref: bool,
    /// Packets before this timestamp may drop their frame when nothing references it.
    skip_before: Option<i64>,
    /// Whether the decoder is dropping non-reference frames now.
    skipping: bool,
}

impl Session<'_> {
    fn seek(&mut self, seek_us: i64) -> Result<(), EngineError> {
        // Like the CLI: any keyframe up to the timestamp, the latest one.
        let _ = self.ictx.seek(seek_us, ..seek_us);
        self.decoder.flush();
        self.eof_sent = false;
        self.drained = false;
        self.last_ts = None;
        Ok(())
    }

    /// True when the index has a keyframe after `cur` and at or before `target`, so a
    /// seek skips decoding; without an index, when the gap is long.
    fn keyframe_after(&self, cur: i64, target: i64, tb: Rational) -> bool {
        match index_keyframe_before(self.ictx, self.index, target) {
            Some(k) => k > cur,
            None => tb_to_secs(target - cur, tb) > 10.0,
        }
    }

    fn next_frame(&mut self, name: &str) -> Result<Option<frame::Video>, EngineError> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let mut f = frame::Video::empty();
            match self.decoder.receive_frame(&mut f) {
                Ok(()) => {
                    if let Some(ts) = f.timestamp() {
                        self.last_ts = Some(ts);
                    }
                    return Ok(Some(f));
                }
                Err(ff::Error::Eof) => {
                    self.drained = true;
                    return Ok(None);
                }
                Err(ff::Error::Other { errno }) if errno == EAGAIN => {}
                Err(_) => {
                    // A frame that failed to decode; the CLI skips it, and so do we.
                    self.bad_packets += 1;
                    if self.bad_packets > 1000 {
                        return Err(EngineError::Invalid {
                            input: name.to_owned(),
                            reason: "too many undecodable frames: the video is corrupt".into(),
                        });
                    }
                    continue;
                }
            }
            if self.drained || self.eof_sent {
                // Sent EOF and still EAGAIN: nothing more will come.
                return Ok(None);
            }
            let mut pkt = ff::Packet::empty();
            match pkt.read(self.ictx) {
                Ok(()) => {
                    if pkt.stream() == self.index {
                        let skip = self.skip_nonref
                            && matches!((pkt.pts(), self.skip_before), (Some(p), Some(w)) if p < w);
                        if skip != self.skipping {
                            self.decoder.skip_frame(if skip {
                                ff::codec::discard::Discard::NonReference
                            } else {
                                ff::codec::discard::Discard::Default
                            });
                            self.skipping = skip;
                        }
                        // Frames are drained before each send, so EAGAIN cannot happen here.
                        if self.decoder.send_packet(&pkt).is_err() {
                            self.bad_packets += 1;
                        }
                    }
                }
                Err(ff::Error::Eof) => {
                    let _ = self.decoder.send_eof();
                    self.eof_sent = true;
                }
                Err(ff::Error::InvalidData) => {
                    self.bad_packets += 1;
                    if self.bad_packets > 1000 {
                        return Err(EngineError::Invalid {
                            input: name.to_owned(),
                            reason: "the container is corrupt".into(),
                        });
                    }
                }
                Err(e) => {
                    // A read error mid-file (truncated, network): treat as the end.
                    tracing::debug!(input = name, error = %e, "read error, treating as end of input");
                    self.bad_packets += 1;
                    let _ = self.decoder.send_eof();
                    self.eof_sent = true;
                }
            }
        }
    }

    /// The first frame whose timestamp is at or after `want`.
    fn frame_at(&mut self, name: &str, want: i64) -> Result<Option<Picked>, EngineError> {
        while let Some(f) = self.next_frame(name)? {
            if let Some(ts) = f.timestamp()
                && ts >= want
            {
                return Ok(Some(Picked { frame: f, ts }));
            }
        }
        Ok(None)
    }

    /// The first frame at or after `want` that is not nearly uniform, looking at most
    /// `scan` frames on; failing that, the most detailed frame seen.
    fn representative(
        &mut self,
        name: &str,
        want: i64,
        scan: u32,
        conv: &mut Converter,
    ) -> Result<Option<Picked>, EngineError> {
        let Some(first) = self.frame_at(name, want)? else {
            return Ok(None);
        };
        let mut best: Option<(f64, Picked)> = None;
        let mut cur = Some(first);
        let mut seen = 0u32;
        while let Some(p) = cur.take() {
            // Sample every third frame: neighbours are near copies.
            if seen.is_multiple_of(3) {
                let rgb = conv.run(&p.frame).map_err(|r| internal(name, r))?;
                let (mean, sd) = luma_stats(&rgb);
                if sd >= UNIFORM_SD && (BLACK_MEAN..=WHITE_MEAN).contains(&mean) {
                    return Ok(Some(p));
                }
                if best.as_ref().is_none_or(|(s, _)| sd > *s) {
                    best = Some((sd, p));
                }
            }
            seen += 1;
            if seen >= scan {
                break;
            }
            cur = self
                .next_frame(name)?
                .and_then(|f| f.timestamp().map(|ts| Picked { frame: f, ts }));
        }
        Ok(best.map(|(_, p)| p))
    }
}

/// Below this luma standard deviation a frame counts as uniform (a fade, a title card).
const UNIFORM_SD: f64 = 12.0;
const BLACK_MEAN: f64 = 24.0;
const WHITE_MEAN: f64 = 235.0;

/// Mean and standard deviation of the luma of an RGB24 frame, on a sparse grid.
pub fn luma_stats(rgb: &frame::Video) -> (f64, f64) {
    let (w, h, stride) = (rgb.width() as usize, rgb.height() as usize, rgb.stride(0));
    let data = rgb.data(0);
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for y in (0..h).step_by(4) {
        let row = &data[y * stride..y * stride + w * 3];
        for px in row.chunks_exact(3).step_by(4) {
            let l = (77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2])) >> 8;
            let l = f64::from(l);
            n += 1.0;
            sum += l;
            sq += l * l;
        }
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = sum / n;
    (mean, (sq / n - mean * mean).max(0.0).sqrt())
}

const EAGAIN: i32 = 11;

fn display_matrix(stream: &format::stream::Stream<'_>) -> Option<[i32; 9]> {
    stream
        .side_data()
        .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
        .and_then(|sd| {
            let d = sd.data();
            (d.len() >= 36).then(|| {
                let mut m = [0i32; 9];
                for (i, v) in m.iter_mut().enumerate() {
                    let b = [d[i * 4], d[i * 4 + 1], d[i * 4 + 2], d[i * 4 + 3]];
                    *v = i32::from_ne_bytes(b);
                }
                m
            })
        })
}

fn build_sprite(
    name: &str,
    sp: SpriteSpec,
    tiles: Vec<Option<frame::Video>>,
    spans: Vec<(f64, f64)>,
    req: &Request,
    limits: &Limits,
) -> Result<Sprite, EngineError> {
    let tiles: Vec<frame::Video> = tiles.into_iter().flatten().collect();
    let Some(first) = tiles.first() else {
        return Err(internal(name, "no sprite tile decoded".into()));
    };
    let (tw, th) = (first.width(), first.height());
    let columns = sp.columns.clamp(1, sp.frames.max(1));
    let rows = (tiles.len() as u32).div_ceil(columns);
    let (w, h) = (tw * columns, th * rows);
    if u64::from(w) * u64::from(h) > limits.max_output_pixels {
        return Err(EngineError::Invalid {
            input: name.to_owned(),
            reason: format!(
                "the sprite sheet would be {w}x{h}, more than the {} pixels allowed",
                limits.max_output_pixels
            ),
        });
    }
    let mut sheet = frame::Video::new(Pixel::RGB24, w, h);
    let stride = sheet.stride(0);
    let data = sheet.data_mut(0);
    data.fill(0);
    for (i, t) in tiles.iter().enumerate() {
        let (cx, cy) = ((i as u32 % columns) * tw, (i as u32 / columns) * th);
        let (cw, ch) = (t.width().min(tw) as usize, t.height().min(th) as usize);
        let ts = t.stride(0);
        let src = t.data(0);
        for y in 0..ch {
            let d0 = (cy as usize + y) * stride + cx as usize * 3;
            data[d0..d0 + cw * 3].copy_from_slice(&src[y * ts..y * ts + cw * 3]);
        }
    }
    let image = encode::encode(&sheet, req.format, req.quality).map_err(|r| internal(name, r))?;
    Ok(Sprite {
        image,
        columns,
        rows,
        tile_width: tw,
        tile_height: th,
        spans,
    })
}

// The few FFmpeg fields ffmpeg-next does not expose. Each read is of a plain field of a
// live object owned by the safe wrapper borrowed here.
#[allow(unsafe_code)]
mod raw {
    use super::*;

    /// Coded width and height from the stream's parameters, before any decoder opens.
    pub(super) fn dimensions(p: &codec::Parameters) -> (u32, u32) {
        // SAFETY: `as_ptr` is a valid AVCodecParameters for the lifetime of `p`.
        let (w, h) = unsafe { ((*p.as_ptr()).width, (*p.as_ptr()).height) };
        (w.max(0) as u32, h.max(0) as u32)
    }

    /// The container's `start_time` (AV_TIME_BASE units), which `-ss` is relative to.
    pub(super) fn start_time(ictx: &format::context::Input) -> i64 {
        // SAFETY: `as_ptr` is the context's own live AVFormatContext.
        unsafe { (*ictx.as_ptr()).start_time }
    }

    /// `codecpar->video_delay`: non-zero when frames are reordered (B-frames).
    pub(super) fn has_video_delay(p: &codec::Parameters) -> bool {
        // SAFETY: `as_ptr` is a valid AVCodecParameters for the lifetime of `p`.
        unsafe { (*p.as_ptr()).video_delay > 0 }
    }

    /// Timestamp of the index's keyframe at or before `ts` (stream time base), if any.
    pub(super) fn index_keyframe_before(
        ictx: &format::context::Input,
        stream: usize,
        ts: i64,
    ) -> Option<i64> {
        // SAFETY: the stream index comes from this context's own stream list, and the
        // returned entry points into the stream's index, read before any other call.
        unsafe {
            let ctx = ictx.as_ptr();
            let st = *(*ctx).streams.add(stream);
            let entry = ff::ffi::avformat_index_get_entry_from_timestamp(
                st,
                ts,
                ff::ffi::AVSEEK_FLAG_BACKWARD,
            );
            (!entry.is_null()).then(|| (*entry).timestamp)
        }
    }

    pub(super) trait SeekToPts {
        fn flags_contains_seek_to_pts(&self) -> bool;
    }

    impl SeekToPts for format::format::Input {
        fn flags_contains_seek_to_pts(&self) -> bool {
            // SAFETY: a demuxer description is static data.
            unsafe { (*self.as_ptr()).flags & ff::ffi::AVFMT_SEEK_TO_PTS != 0 }
        }
    }
}

use raw::{SeekToPts, dimensions, has_video_delay, index_keyframe_before, start_time};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_like_ffmpeg() {
        assert_eq!(rescale(2_500_000, 12800, 1_000_000), 32000);
        assert_eq!(rescale(1, 1, 2), 1);
        assert_eq!(rescale(-1, 1, 2), -1);
        assert_eq!(vtt_time(62.5), "00:01:02.500");
    }
}
