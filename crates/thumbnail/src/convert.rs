//! Decoded frames to RGB24 at the asked size, done the way the `ffmpeg` CLI's filter
//! graph does it, without libavfilter: its autorotate (FFmpeg 5.1's `transpose`,
//! `hflip`, `vflip` or `rotate`, ported here plane by plane), then `scale` (libswscale,
//! bicubic, with the settings `vf_scale` gives it: MPEG-2 chroma siting for yuv420p,
//! the frame's range and matrix), then the centre `crop` of `cover`. Linking
//! libavfilter cost every job process ~34 more shared libraries to load and relocate,
//! a third of its run time, for these few filters.

use ff::format::Pixel;
use ff::frame;
use ffmpeg_next as ff;

use crate::engine::{Fit, Size, rescale};

/// What the CLI's autorotate inserts for a display matrix (`ffmpeg_filter.c`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Orient {
    None,
    /// `transpose` with its `dir`: 0 cclock_flip, 1 clock, 2 cclock, 3 clock_flip.
    Transpose(u8),
    Flip {
        h: bool,
        v: bool,
    },
    /// `rotate` by this many radians, for angles that are not a multiple of 90.
    Rotate(f64),
}

impl Orient {
    pub(crate) fn from_display(display: &Option<[i32; 9]>) -> Self {
        let Some(m) = display else {
            return Self::None;
        };
        let theta = rotation_degrees(m);
        if (theta - 90.0).abs() < 1.0 {
            Self::Transpose(if m[3] > 0 { 0 } else { 1 })
        } else if (theta - 180.0).abs() < 1.0 {
            Self::Flip {
                h: m[0] < 0,
                v: m[4] < 0,
            }
        } else if (theta - 270.0).abs() < 1.0 {
            Self::Transpose(if m[3] < 0 { 3 } else { 2 })
        } else if theta.abs() > 1.0 {
            // The CLI passes `%f*PI/180`: the angle printed to six decimals.
            let printed: f64 = format!("{theta:.6}").parse().unwrap_or(theta);
            Self::Rotate(printed * std::f64::consts::PI / 180.0)
        } else if m[4] < 0 {
            Self::Flip { h: false, v: true }
        } else {
            Self::None
        }
    }
}

/// Clockwise rotation in degrees, 0..360, as FFmpeg 5.1's `get_rotation` computes it.
pub(crate) fn rotation_degrees(m: &[i32; 9]) -> f64 {
    let conv = |x: i32| f64::from(x) / 65536.0;
    let s0 = conv(m[0]).hypot(conv(m[3]));
    let s1 = conv(m[1]).hypot(conv(m[4]));
    let rot = -(conv(m[1]) / s1).atan2(conv(m[0]) / s0).to_degrees();
    let mut theta = -rot.round();
    theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
    theta
}

/// The `scale` filter's output size for an input of `w`x`h` (`scale_eval.c`): 0 is the
/// input's side, -1 follows the aspect; `contain`/`cover` are its
/// `force_original_aspect_ratio` decrease/increase.
fn scaled_size(w: u32, h: u32, size: Size) -> (i64, i64) {
    let (iw, ih) = (i64::from(w), i64::from(h));
    let (mut ow, mut oh) = match (size.width, size.height) {
        (0, 0) => (iw, ih),
        (sw, 0) => (i64::from(sw), -1),
        (0, sh) => (-1, i64::from(sh)),
        (sw, sh) => (i64::from(sw), i64::from(sh)),
    };
    if ow < 0 {
        ow = rescale(oh, iw, ih);
    }
    if oh < 0 {
        oh = rescale(ow, ih, iw);
    }
    if size.width > 0 && size.height > 0 {
        let (tw, th) = (rescale(oh, iw, ih), rescale(ow, ih, iw));
        (ow, oh) = match size.fit {
            Fit::Contain => (tw.min(ow), th.min(oh)),
            Fit::Cover => (tw.max(ow), th.max(oh)),
        };
    }
    (ow, oh)
}

/// Turns decoded frames into RGB24 thumbnails of one shape; keeps its swscale contexts
/// while the frames keep theirs.
pub(crate) struct Converter {
    orient: Orient,
    size: Size,
    /// The formats the orientation filter takes; none without one.
    formats: Option<raw::Formats>,
    /// Converts a frame whose format the orientation filter does not take, first.
    pre: Option<raw::Sws>,
    main: Option<raw::Sws>,
}

impl Converter {
    pub(crate) fn new(orient: Orient, size: Size) -> Self {
        let sized = size.width > 0 || size.height > 0;
        Self {
            orient,
            size,
            formats: (orient != Orient::None).then(|| raw::Formats::for_orient(orient, sized)),
            pre: None,
            main: None,
        }
    }

    pub(crate) fn run(&mut self, input: &frame::Video) -> Result<frame::Video, String> {
        let oriented;
        let src = if let Some(accepted) = &self.formats {
            let converted;
            let fit = if accepted.takes(input.format()) {
                input
            } else {
                // As the filter graph would: a scale to the closest format that both it
                // and what follows it take (the CLI's `-vf scale`, or else the PNG encoder).
                let fmt = accepted.closest_to(input.format());
                converted =
                    raw::Sws::cached(&mut self.pre, input, input.width(), input.height(), fmt)?
                        .scale(input)?;
                &converted
            };
            oriented = orient(self.orient, fit)?;
            &oriented
        } else {
            input
        };
        let (w, h) = scaled_size(src.width(), src.height(), self.size);
        let (w, h) = match (u32::try_from(w), u32::try_from(h)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => {
                return Err(format!(
                    "cannot scale a {}x{} frame to {w}x{h}",
                    src.width(),
                    src.height()
                ));
            }
        };
        let rgb = if src.format() == Pixel::RGB24 && (w, h) == (src.width(), src.height()) {
            // `scale` passes such a frame through untouched.
            src.clone()
        } else {
            raw::Sws::cached(&mut self.main, src, w, h, Pixel::RGB24)?.scale(src)?
        };
        match (self.size.fit, self.size.width, self.size.height) {
            (Fit::Cover, bw, bh) if bw > 0 && bh > 0 && (bw, bh) != (w, h) => {
                Ok(crop(&rgb, bw.min(w), bh.min(h)))
            }
            _ => Ok(rgb),
        }
    }
}

/// The centre `crop` of an RGB24 frame (`vf_crop`: offsets rounded half to even).
fn crop(rgb: &frame::Video, w: u32, h: u32) -> frame::Video {
    let x = (f64::from(rgb.width() - w) / 2.0).round_ties_even() as usize;
    let y = (f64::from(rgb.height() - h) / 2.0).round_ties_even() as usize;
    let mut out = frame::Video::new(Pixel::RGB24, w, h);
    raw::copy_props(&mut out, rgb);
    let (ss, ds) = (rgb.stride(0), out.stride(0));
    let row = w as usize * 3;
    let src = rgb.data(0);
    let dst = out.data_mut(0);
    for r in 0..h as usize {
        let s0 = (y + r) * ss + x * 3;
        dst[r * ds..r * ds + row].copy_from_slice(&src[s0..s0 + row]);
    }
    out
}

/// One plane's geometry: width and height in elements of `step` bytes.
#[derive(Debug, Clone, Copy)]
struct Plane {
    w: usize,
    h: usize,
    step: usize,
}

fn planes(f: &frame::Video) -> Vec<Plane> {
    let layout = raw::layout(f.format());
    (0..layout.planes)
        .map(|p| {
            let (hs, vs) = if p == 1 || p == 2 {
                (layout.log2_w, layout.log2_h)
            } else {
                (0, 0)
            };
            Plane {
                w: ceil_rshift(f.width(), hs),
                h: ceil_rshift(f.height(), vs),
                step: layout.steps[p],
            }
        })
        .collect()
}

fn ceil_rshift(v: u32, s: u32) -> usize {
    (v as usize).div_ceil(1 << s)
}

/// Applies `o` (not `None`) to a frame of a format its filter takes.
fn orient(o: Orient, f: &frame::Video) -> Result<frame::Video, String> {
    let (w, h) = match o {
        Orient::Transpose(_) => (f.height(), f.width()),
        _ => (f.width(), f.height()),
    };
    let mut out = frame::Video::new(f.format(), w, h);
    raw::copy_props(&mut out, f);
    let (ip, op) = (planes(f), planes(&out));
    for (p, (i, o_)) in ip.iter().zip(&op).enumerate() {
        let (ss, ds) = (f.stride(p), out.stride(p));
        let src = f.data(p);
        let dst = out.data_mut(p);
        let e = i.step;
        match o {
            Orient::None => {}
            Orient::Transpose(dir) => {
                // vf_transpose: out(x, y) = in(y, x), rows of the input read bottom up
                // for bit 0 of `dir`, rows of the output written bottom up for bit 1.
                for y in 0..o_.h {
                    let dy = if dir & 2 != 0 { o_.h - 1 - y } else { y };
                    let drow = &mut dst[dy * ds..dy * ds + o_.w * e];
                    for x in 0..o_.w {
                        let sy = if dir & 1 != 0 { i.h - 1 - x } else { x };
                        let s0 = sy * ss + y * e;
                        drow[x * e..x * e + e].copy_from_slice(&src[s0..s0 + e]);
                    }
                }
            }
            Orient::Flip { h: hf, v: vf } => {
                for y in 0..o_.h {
                    let sy = if vf { i.h - 1 - y } else { y };
                    let srow = &src[sy * ss..sy * ss + i.w * e];
                    let drow = &mut dst[y * ds..y * ds + o_.w * e];
                    if hf {
                        for x in 0..o_.w {
                            let sx = (i.w - 1 - x) * e;
                            drow[x * e..x * e + e].copy_from_slice(&srow[sx..sx + e]);
                        }
                    } else {
                        drow.copy_from_slice(srow);
                    }
                }
            }
            Orient::Rotate(angle) => {
                let fill = raw::black(f.format(), p);
                rotate_plane(
                    src,
                    ss,
                    *i,
                    dst,
                    ds,
                    *o_,
                    angle,
                    &fill,
                    raw::depth(f.format()) > 8,
                );
            }
        }
    }
    Ok(out)
}

const FIXP: i64 = 1 << 16;
const FIXP2: i64 = 1 << 20;
const INT_PI: i64 = 3_294_199;

/// vf_rotate's fixed-point sine: input scaled by 2^20, output by 2^16.
fn int_sin(mut a: i64) -> i64 {
    if a < 0 {
        a = INT_PI - a;
    }
    a %= 2 * INT_PI;
    if a >= INT_PI * 3 / 2 {
        a -= 2 * INT_PI;
    }
    if a >= INT_PI / 2 {
        a = INT_PI - a;
    }
    let a2 = (a * a) / FIXP2;
    let mut res = 0;
    let mut i = 2;
    while i < 11 {
        res += a;
        a = -a * a2 / (FIXP2 * i * (i + 1));
        i += 2;
    }
    (res + 8) >> 4
}

/// One plane of vf_rotate (bilinear, output the input's size, filled black first).
#[allow(clippy::too_many_arguments)]
fn rotate_plane(
    src: &[u8],
    ss: usize,
    ip: Plane,
    dst: &mut [u8],
    ds: usize,
    op: Plane,
    angle: f64,
    fill: &[u8],
    wide: bool,
) {
    let e = ip.step;
    for y in 0..op.h {
        for x in 0..op.w {
            dst[y * ds + x * e..y * ds + x * e + e].copy_from_slice(&fill[..e]);
        }
    }
    let angle_int = (angle * (FIXP * 16) as f64) as i32 as i64;
    let s = int_sin(angle_int) as i32;
    let c = int_sin(angle_int + INT_PI / 2) as i32;
    let (inw, inh, outw, outh) = (ip.w as i32, ip.h as i32, op.w as i32, op.h as i32);
    let xi = -(outw - 1) * c / 2;
    let yi = (outw - 1) * s / 2;
    let mut xprime = -(outh - 1) * s / 2;
    let mut yprime = -(outh - 1) * c / 2;
    let (max_x, max_y) = (inw - 1, inh - 1);
    let fixp = FIXP as i32;
    let sample = |off: usize, wide: bool| -> i64 {
        if wide {
            i64::from(u16::from_le_bytes([src[off], src[off + 1]]))
        } else {
            i64::from(src[off])
        }
    };
    for j in 0..outh {
        let mut x = xprime + xi + fixp * (inw - 1) / 2;
        let mut y = yprime + yi + fixp * (inh - 1) / 2;
        for i in 0..outw {
            let (x1, y1) = (x >> 16, y >> 16);
            if x1 >= -1 && x1 <= inw && y1 >= -1 && y1 <= inh {
                let int_x = (x >> 16).clamp(0, max_x) as usize;
                let int_y = (y >> 16).clamp(0, max_y) as usize;
                let (fx, fy) = (i64::from(x & 0xFFFF), i64::from(y & 0xFFFF));
                let int_x1 = (int_x + 1).min(max_x as usize);
                let int_y1 = (int_y + 1).min(max_y as usize);
                let d0 = j as usize * ds + i as usize * e;
                let unit = if wide { 2 } else { 1 };
                for k in (0..e).step_by(unit) {
                    let at = |xx: usize, yy: usize| sample(yy * ss + xx * e + k, wide);
                    // 32-bit sums as in C: they fit (16-bit samples times 2^16 stay below 2^32
                    // only as i64, so keep i64 and truncate like the C `int` does).
                    let s0 = ((FIXP - fx) * at(int_x, int_y) + fx * at(int_x1, int_y)) as i32;
                    let s1 = ((FIXP - fx) * at(int_x, int_y1) + fx * at(int_x1, int_y1)) as i32;
                    let v = ((FIXP - fy) * i64::from(s0) + fy * i64::from(s1)) >> 32;
                    if wide {
                        dst[d0 + k..d0 + k + 2].copy_from_slice(&(v as u16).to_le_bytes());
                    } else {
                        dst[d0 + k] = v as u8;
                    }
                }
            }
            x += c;
            y -= s;
        }
        xprime += s;
        yprime += c;
    }
}

// The libswscale and pixel-format calls ffmpeg-next does not wrap. Each touches only
// objects created here or owned by a safe wrapper borrowed for the call.
#[allow(unsafe_code)]
mod raw {
    use std::ffi::CStr;

    use ff::ffi;
    use ff::format::Pixel;
    use ff::frame;
    use ffmpeg_next as ff;

    use super::Orient;

    pub(super) struct Layout {
        pub planes: usize,
        pub log2_w: u32,
        pub log2_h: u32,
        pub steps: [usize; 4],
    }

    fn desc(p: Pixel) -> Option<&'static ffi::AVPixFmtDescriptor> {
        // SAFETY: descriptors are static tables; null for an unknown format.
        unsafe { ffi::av_pix_fmt_desc_get(p.into()).as_ref() }
    }

    pub(super) fn layout(p: Pixel) -> Layout {
        let Some(d) = desc(p) else {
            return Layout {
                planes: 0,
                log2_w: 0,
                log2_h: 0,
                steps: [0; 4],
            };
        };
        let mut steps = [0i32; 4];
        // SAFETY: `steps` has the four entries the function writes; the comps pointer
        // may be null.
        unsafe { ffi::av_image_fill_max_pixsteps(steps.as_mut_ptr(), std::ptr::null_mut(), d) };
        let planes = d.comp[..usize::from(d.nb_components)]
            .iter()
            .map(|c| c.plane as usize + 1)
            .max()
            .unwrap_or(0);
        Layout {
            planes,
            log2_w: u32::from(d.log2_chroma_w),
            log2_h: u32::from(d.log2_chroma_h),
            steps: steps.map(|s| s.max(0) as usize),
        }
    }

    pub(super) fn depth(p: Pixel) -> i32 {
        desc(p).map_or(8, |d| d.comp[0].depth)
    }

    /// vf_rotate's fill for `plane`: black as `ff_draw_color` puts it (limited range
    /// unless a yuvj format or RGB, alpha opaque), little-endian for > 8 bits.
    pub(super) fn black(p: Pixel, plane: usize) -> Vec<u8> {
        let Some(d) = desc(p) else {
            return vec![0; 8];
        };
        let flags = d.flags as i32;
        let rgb = flags & ffi::AV_PIX_FMT_FLAG_RGB != 0;
        let full = rgb
            || matches!(
                p,
                Pixel::YUVJ420P
                    | Pixel::YUVJ422P
                    | Pixel::YUVJ444P
                    | Pixel::YUVJ411P
                    | Pixel::YUVJ440P
            );
        let mut v = [0f64, 0.0, 0.0, 1.0];
        for (i, x) in v.iter_mut().enumerate().take(3) {
            let chroma = !rgb && i > 0;
            if !full {
                *x = *x * if chroma { 224.0 } else { 219.0 } / 255.0
                    + if chroma { 128.0 } else { 16.0 } / 255.0;
            } else if chroma {
                *x += 0.5;
            }
        }
        if d.nb_components <= 2 {
            v[1] = v[3];
        }
        let mut out = vec![0u8; 8];
        for (i, c) in d.comp[..usize::from(d.nb_components)].iter().enumerate() {
            if c.plane as usize != plane {
                continue;
            }
            let val = (v[i] * f64::from((1u32 << (c.depth + c.shift)) - 1) + 0.5) as u32;
            let off = c.offset.max(0) as usize;
            if c.depth > 8 {
                out[off..off + 2].copy_from_slice(&(val as u16).to_le_bytes());
            } else {
                out[off] = val as u8;
            }
        }
        out
    }

    /// The pixel formats an orientation filter takes, as libavfilter's negotiation
    /// (FFmpeg 5.1) settles them: a decoded frame in one of the filter's own formats goes
    /// in as it is (its input link is merged first); any other is converted to the
    /// closest of those that both the filter and what follows it take (`scale`'s inputs
    /// when sized, else the PNG encoder's).
    pub(super) struct Formats {
        own: Vec<ffi::AVPixelFormat>,
        merged: Vec<ffi::AVPixelFormat>,
    }

    impl Formats {
        pub(super) fn for_orient(o: Orient, sized: bool) -> Self {
            use ffi::AVPixelFormat::*;
            let own = Self::own(o);
            if sized {
                // SAFETY: plain queries on format ids.
                let scale_in = |f: ffi::AVPixelFormat| unsafe {
                    ffi::sws_isSupportedInput(f) > 0
                        || ffi::sws_isSupportedEndiannessConversion(f) > 0
                };
                let merged = own.iter().copied().filter(|f| scale_in(*f)).collect();
                return Self { own, merged };
            }
            let png = [
                AV_PIX_FMT_RGB24,
                AV_PIX_FMT_RGBA,
                AV_PIX_FMT_RGB48BE,
                AV_PIX_FMT_RGBA64BE,
                AV_PIX_FMT_PAL8,
                AV_PIX_FMT_GRAY8,
                AV_PIX_FMT_YA8,
                AV_PIX_FMT_GRAY16BE,
                AV_PIX_FMT_YA16BE,
                AV_PIX_FMT_MONOBLACK,
            ];
            let merged = png.into_iter().filter(|f| own.contains(f)).collect();
            Self { own, merged }
        }

        fn own(o: Orient) -> Vec<ffi::AVPixelFormat> {
            use ffi::AVPixelFormat::*;
            if let Orient::Rotate(_) = o {
                return vec![
                    AV_PIX_FMT_GBRP,
                    AV_PIX_FMT_GBRAP,
                    AV_PIX_FMT_ARGB,
                    AV_PIX_FMT_RGBA,
                    AV_PIX_FMT_ABGR,
                    AV_PIX_FMT_BGRA,
                    AV_PIX_FMT_0RGB,
                    AV_PIX_FMT_RGB0,
                    AV_PIX_FMT_0BGR,
                    AV_PIX_FMT_BGR0,
                    AV_PIX_FMT_RGB24,
                    AV_PIX_FMT_BGR24,
                    AV_PIX_FMT_GRAY8,
                    AV_PIX_FMT_YUV410P,
                    AV_PIX_FMT_YUV444P,
                    AV_PIX_FMT_YUVJ444P,
                    AV_PIX_FMT_YUV420P,
                    AV_PIX_FMT_YUVJ420P,
                    AV_PIX_FMT_YUVA444P,
                    AV_PIX_FMT_YUVA420P,
                    AV_PIX_FMT_YUV420P10LE,
                    AV_PIX_FMT_YUVA420P10LE,
                    AV_PIX_FMT_YUV444P10LE,
                    AV_PIX_FMT_YUVA444P10LE,
                    AV_PIX_FMT_YUV420P12LE,
                    AV_PIX_FMT_YUV444P12LE,
                    AV_PIX_FMT_YUV444P16LE,
                    AV_PIX_FMT_YUVA444P16LE,
                    AV_PIX_FMT_YUV420P16LE,
                    AV_PIX_FMT_YUVA420P16LE,
                    AV_PIX_FMT_YUV444P9LE,
                    AV_PIX_FMT_YUVA444P9LE,
                    AV_PIX_FMT_YUV420P9LE,
                    AV_PIX_FMT_YUVA420P9LE,
                ];
            }
            let (pal, bits, hw) = (
                ffi::AV_PIX_FMT_FLAG_PAL as u64,
                ffi::AV_PIX_FMT_FLAG_BITSTREAM as u64,
                ffi::AV_PIX_FMT_FLAG_HWACCEL as u64,
            );
            let mut out = Vec::new();
            let mut d: *const ffi::AVPixFmtDescriptor = std::ptr::null();
            loop {
                // SAFETY: walks FFmpeg's static descriptor table until it returns null.
                d = unsafe { ffi::av_pix_fmt_desc_next(d) };
                // SAFETY: non-null entries point into that static table.
                let Some(r) = (unsafe { d.as_ref() }) else {
                    break;
                };
                // vf_transpose's and vf_hflip's query_formats; vflip takes everything.
                // Palettes are left to a conversion (their second plane is no image).
                let ok = r.flags & (pal | bits | hw) == 0
                    && match o {
                        Orient::Transpose(_) => r.log2_chroma_w == r.log2_chroma_h,
                        Orient::Flip { h: false, .. } => true,
                        _ => {
                            !(r.log2_chroma_w != r.log2_chroma_h
                                && r.comp[0].plane == r.comp[1].plane)
                        }
                    };
                if ok {
                    // SAFETY: `d` is a live descriptor from the table.
                    out.push(unsafe { ffi::av_pix_fmt_desc_get_id(d) });
                }
            }
            out
        }

        pub(super) fn takes(&self, p: Pixel) -> bool {
            let p: ffi::AVPixelFormat = p.into();
            self.own.contains(&p)
        }

        /// The one libavfilter's `pick_format` would convert to.
        pub(super) fn closest_to(&self, p: Pixel) -> Pixel {
            let src: ffi::AVPixelFormat = p.into();
            let alpha = desc(p).is_some_and(|d| d.nb_components % 2 == 0);
            let mut best = ffi::AVPixelFormat::AV_PIX_FMT_NONE;
            for &f in &self.merged {
                // SAFETY: plain value arithmetic on format ids; the loss pointer may be null.
                best = unsafe {
                    ffi::av_find_best_pix_fmt_of_2(
                        best,
                        f,
                        src,
                        i32::from(alpha),
                        std::ptr::null_mut(),
                    )
                };
            }
            best.into()
        }
    }

    pub(super) fn copy_props(dst: &mut frame::Video, src: &frame::Video) {
        // SAFETY: both are live frames owned by their wrappers.
        unsafe { ffi::av_frame_copy_props(dst.as_mut_ptr(), src.as_ptr()) };
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Key {
        src: (u32, u32, Pixel),
        range: ffi::AVColorRange,
        dst: (u32, u32, Pixel),
    }

    /// A swscale context set up as `vf_scale` sets its own.
    pub(super) struct Sws {
        ptr: *mut ffi::SwsContext,
        key: Key,
    }

    impl Drop for Sws {
        fn drop(&mut self) {
            // SAFETY: the context was allocated by sws_alloc_context and is freed once.
            unsafe { ffi::sws_freeContext(self.ptr) };
        }
    }

    fn set(ctx: *mut ffi::SwsContext, name: &CStr, v: i64) -> Result<(), String> {
        // SAFETY: `ctx` is a live SwsContext (an AVClass object), `name` a C string.
        let r = unsafe { ffi::av_opt_set_int(ctx.cast(), name.as_ptr(), v, 0) };
        if r < 0 {
            return Err(format!("swscale option {name:?}: {}", ff::Error::from(r)));
        }
        Ok(())
    }

    impl Sws {
        /// The context in `slot` when it still fits `f` -> `w`x`h` `fmt`, else a new one.
        pub(super) fn cached<'a>(
            slot: &'a mut Option<Sws>,
            f: &frame::Video,
            w: u32,
            h: u32,
            fmt: Pixel,
        ) -> Result<&'a mut Sws, String> {
            let key = Key {
                src: (f.width(), f.height(), f.format()),
                // SAFETY: reads a plain field of a live frame.
                range: unsafe { (*f.as_ptr()).color_range },
                dst: (w, h, fmt),
            };
            if slot.as_ref().is_none_or(|s| s.key != key) {
                *slot = None;
                *slot = Some(Sws::new(key)?);
            }
            slot.as_mut().ok_or_else(|| "no swscale context".to_owned())
        }

        fn new(key: Key) -> Result<Sws, String> {
            // SAFETY: allocation only; null on failure.
            let ptr = unsafe { ffi::sws_alloc_context() };
            if ptr.is_null() {
                return Err("cannot allocate a swscale context".into());
            }
            let s = Sws { ptr, key };
            let (sw, sh, sf) = key.src;
            let (dw, dh, df) = key.dst;
            let sf_id: ffi::AVPixelFormat = sf.into();
            let df_id: ffi::AVPixelFormat = df.into();
            set(ptr, c"srcw", i64::from(sw))?;
            set(ptr, c"srch", i64::from(sh))?;
            set(ptr, c"src_format", sf_id as i64)?;
            set(ptr, c"dstw", i64::from(dw))?;
            set(ptr, c"dsth", i64::from(dh))?;
            set(ptr, c"dst_format", df_id as i64)?;
            // vf_scale with flags "" (the CLI's) or "bicubic": swscale's bicubic.
            set(ptr, c"sws_flags", i64::from(ffi::SWS_BICUBIC))?;
            // A filter graph's thread count, which vf_scale hands on: the CPUs (+1).
            set(ptr, c"threads", 0)?;
            if key.range != ffi::AVColorRange::AVCOL_RANGE_UNSPECIFIED {
                let full = key.range == ffi::AVColorRange::AVCOL_RANGE_JPEG;
                set(ptr, c"src_range", i64::from(full))?;
            }
            // vf_scale's "MPEG-2 chroma positions" for yuv420p input.
            let v_chr = if sf == Pixel::YUV420P { 128 } else { -513 };
            set(ptr, c"src_h_chr_pos", -513)?;
            set(ptr, c"src_v_chr_pos", v_chr)?;
            set(ptr, c"dst_h_chr_pos", -513)?;
            set(
                ptr,
                c"dst_v_chr_pos",
                if df == Pixel::YUV420P { 128 } else { -513 },
            )?;
            // SAFETY: `ptr` is a live, configured context; no custom filters.
            let r =
                unsafe { ffi::sws_init_context(ptr, std::ptr::null_mut(), std::ptr::null_mut()) };
            if r < 0 {
                return Err(format!(
                    "cannot convert {sw}x{sh} {sf:?} to {dw}x{dh} {df:?}: {}",
                    ff::Error::from(r)
                ));
            }
            Ok(s)
        }

        /// Scales one frame, with the frame's YUV matrix and range as vf_scale applies them.
        pub(super) fn scale(&mut self, f: &frame::Video) -> Result<frame::Video, String> {
            let (mut inv, mut table) = (std::ptr::null_mut(), std::ptr::null_mut());
            let (mut in_full, mut out_full, mut b, mut c, mut s) = (0, 0, 0, 0, 0);
            // SAFETY: every out-pointer is a local; the context is live.
            let r = unsafe {
                ffi::sws_getColorspaceDetails(
                    self.ptr,
                    &mut inv,
                    &mut in_full,
                    &mut table,
                    &mut out_full,
                    &mut b,
                    &mut c,
                    &mut s,
                )
            };
            if r >= 0 {
                // SAFETY: plain fields of a live frame.
                let (space, range) =
                    unsafe { ((*f.as_ptr()).colorspace, (*f.as_ptr()).color_range) };
                // in_color_matrix "auto": the frame's matrix, BT.601 when unknown or odd.
                let mut cs = space as i32;
                if !(1..=10).contains(&cs) || cs == 8 {
                    cs = ffi::AVColorSpace::AVCOL_SPC_BT470BG as i32;
                }
                // SAFETY: returns a pointer to a static coefficient table.
                let coeffs = unsafe { ffi::sws_getCoefficients(cs) };
                if range != ffi::AVColorRange::AVCOL_RANGE_UNSPECIFIED {
                    in_full = i32::from(range == ffi::AVColorRange::AVCOL_RANGE_JPEG);
                }
                // SAFETY: `coeffs` is a 4-entry static table, the context live.
                unsafe {
                    ffi::sws_setColorspaceDetails(
                        self.ptr, coeffs, in_full, coeffs, out_full, b, c, s,
                    )
                };
            }
            let mut out = frame::Video::empty();
            // SAFETY: `out` is empty, so swscale allocates it at the context's output
            // size and format; `f` is a live frame of the context's input shape.
            let r = unsafe { ffi::sws_scale_frame(self.ptr, out.as_mut_ptr(), f.as_ptr()) };
            if r < 0 {
                return Err(format!("swscale: {}", ff::Error::from(r)));
            }
            // vf_scale's frame properties: the input's (timestamps, primaries and
            // transfer, which the PNG encoder writes), an RGB matrix, the output range.
            copy_props(&mut out, f);
            if desc(self.key.dst.2).is_some_and(|d| d.flags & ffi::AV_PIX_FMT_FLAG_RGB as u64 != 0)
            {
                out.set_color_space(ff::color::Space::RGB);
            }
            out.set_color_range(if out_full != 0 {
                ff::color::Range::JPEG
            } else {
                ff::color::Range::MPEG
            });
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_matches_the_cli() {
        // av_display_rotation_set(m, 90) as written by `-display_rotation 90` / phones.
        let m90 = [0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30];
        assert_eq!(rotation_degrees(&m90), 270.0);
        // transpose=cclock
        assert_eq!(Orient::from_display(&Some(m90)), Orient::Transpose(2));
        // transpose=clock
        let m270 = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30];
        assert_eq!(Orient::from_display(&Some(m270)), Orient::Transpose(1));
        let id = [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30];
        assert_eq!(Orient::from_display(&Some(id)), Orient::None);
        let m180 = [-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30];
        assert_eq!(
            Orient::from_display(&Some(m180)),
            Orient::Flip { h: true, v: true }
        );
    }

    #[test]
    fn sizes_follow_the_scale_filter() {
        let s = |width, height, fit| Size { width, height, fit };
        assert_eq!(scaled_size(320, 240, s(0, 0, Fit::Contain)), (320, 240));
        assert_eq!(scaled_size(320, 240, s(160, 0, Fit::Contain)), (160, 120));
        assert_eq!(scaled_size(240, 320, s(0, 100, Fit::Contain)), (75, 100));
        assert_eq!(scaled_size(320, 240, s(100, 100, Fit::Contain)), (100, 75));
        assert_eq!(scaled_size(320, 240, s(100, 100, Fit::Cover)), (133, 100));
    }

    #[test]
    fn fixed_point_sine_is_vf_rotate_s() {
        assert_eq!(int_sin(0), 0);
        // sin(pi/2) scaled by 2^16, within the Taylor series' error.
        assert!((int_sin(INT_PI / 2) - FIXP).abs() < 8);
    }
}
