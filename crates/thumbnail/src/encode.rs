//! RGB24 frames to PNG, JPEG or WebP with FFmpeg's own encoders (the CLI's PNG
//! encoder, so a PNG here is what `ffmpeg ... out.png` writes for the same pixels).

use ff::format::Pixel;
use ff::software::scaling;
use ff::{codec, frame};
use ffmpeg_next as ff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Png,
    Jpeg,
    Webp,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    /// From a name or a file extension (`png`, `jpg`, `jpeg`, `webp`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Some(Self::Png),
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// Default quality of the lossy formats.
pub const DEFAULT_QUALITY: u8 = 85;

/// Encodes one RGB24 frame; `quality` 1-100 (0: default) applies to JPEG and WebP.
pub fn encode(rgb: &frame::Video, format: ImageFormat, quality: u8) -> Result<Vec<u8>, String> {
    let q = if quality == 0 {
        DEFAULT_QUALITY
    } else {
        quality.min(100)
    };
    let (codec, pix) = match format {
        ImageFormat::Png => (ff::encoder::find(codec::Id::PNG), Pixel::RGB24),
        ImageFormat::Jpeg => (ff::encoder::find(codec::Id::MJPEG), Pixel::YUVJ420P),
        ImageFormat::Webp => (ff::encoder::find_by_name("libwebp"), Pixel::YUV420P),
    };
    let codec = codec.ok_or_else(|| {
        format!(
            "this FFmpeg build has no {} encoder",
            format.extension().to_uppercase()
        )
    })?;
    let converted;
    let input = if pix == Pixel::RGB24 {
        rgb
    } else {
        let mut sws = scaling::Context::get(
            Pixel::RGB24,
            rgb.width(),
            rgb.height(),
            pix,
            rgb.width(),
            rgb.height(),
            scaling::Flags::BICUBIC,
        )
        .map_err(|e| format!("colour conversion: {e}"))?;
        let mut out = frame::Video::empty();
        sws.run(rgb, &mut out)
            .map_err(|e| format!("colour conversion: {e}"))?;
        converted = out;
        &converted
    };
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| format!("encoder: {e}"))?;
    enc.set_width(rgb.width());
    enc.set_height(rgb.height());
    enc.set_format(pix);
    enc.set_time_base((1, 25));
    let mut opts = ff::Dictionary::new();
    match format {
        ImageFormat::Png => {}
        ImageFormat::Jpeg => {
            // Quality 100..1 maps onto MJPEG's qscale 2..31 (lower is better), as `-q:v` takes it.
            enc.set_flags(codec::Flags::QSCALE);
            enc.set_quality(qscale_lambda(q) as usize);
            enc.set_color_range(ff::color::Range::JPEG);
        }
        ImageFormat::Webp => {
            opts.set("quality", &q.to_string());
        }
    }
    let mut enc = enc
        .open_with(opts)
        .map_err(|e| format!("opening the encoder: {e}"))?;
    let mut f = input.clone();
    f.set_pts(Some(0));
    if format == ImageFormat::Jpeg {
        // MJPEG takes a fixed qscale from the frame, as the CLI's `-q:v` sets it.
        set_frame_quality(&mut f, qscale_lambda(q));
    }
    enc.send_frame(&f).map_err(|e| format!("encoding: {e}"))?;
    enc.send_eof().map_err(|e| format!("encoding: {e}"))?;
    let mut out = Vec::new();
    let mut pkt = ff::Packet::empty();
    while enc.receive_packet(&mut pkt).is_ok() {
        if let Some(d) = pkt.data() {
            out.extend_from_slice(d);
        }
    }
    if out.is_empty() {
        return Err("the encoder produced no data".into());
    }
    Ok(out)
}

const QP2LAMBDA: u32 = 118;

fn qscale_lambda(q: u8) -> i32 {
    let qscale = 2 + (u32::from(100 - q) * 29) / 99;
    (qscale * QP2LAMBDA) as i32
}

#[allow(unsafe_code)]
fn set_frame_quality(f: &mut frame::Video, lambda: i32) {
    // SAFETY: `as_mut_ptr` is the frame's own live AVFrame; `quality` is a plain int.
    unsafe { (*f.as_mut_ptr()).quality = lambda };
}
