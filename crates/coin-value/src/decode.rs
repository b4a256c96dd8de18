//! Bytes to a working-size RGB picture: JPEG is scaled in the DCT domain (1/2, 1/4, 1/8
//! IDCT; at 1/8 the DC terms alone, by [`crate::jpeg_dc`]) so a 12 MP photo never exists
//! at full size; PNG and WebP decode under
//! `image::Limits`. EXIF orientation is applied in both paths.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::Error;

/// Decoding bounds, from the service configuration.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest width x height accepted (before any scaling).
    pub max_pixels: u64,
    /// Largest side accepted.
    pub max_side: u32,
    /// Long side of the working picture the detector sees: JPEGs are decoded at the
    /// coarsest DCT scale whose long side is within a tenth of it (1/8 for a 12 MP
    /// photo), anything still larger is resized down to it.
    pub work_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 64_000_000,
            max_side: 16_384,
            work_side: 512,
        }
    }
}

/// A decoded picture at working size and how it maps to the original.
#[derive(Debug)]
pub struct Decoded {
    pub image: RgbImage,
    /// Width and height of the original picture, as oriented.
    pub full_width: u32,
    pub full_height: u32,
    /// Original pixels per working pixel.
    pub factor: f64,
    pub format: ImageFormat,
}

/// Decodes `bytes` (JPEG, PNG or WebP) to a working picture whose long side is at most
/// `limits.work_side` (and at least nine tenths of it when the original is that large).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, Error> {
    if bytes.is_empty() {
        return Err(Error::NotAnImage("the request holds no image bytes".into()));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        Error::NotAnImage(format!(
            "{} bytes that are not a JPEG, PNG or WebP picture (first bytes {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ))
    })?;
    let (image, full_w, full_h, orientation) = match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, limits)?,
        ImageFormat::Png | ImageFormat::WebP => decode_other(bytes, format, limits)?,
        other => {
            return Err(Error::NotAnImage(format!(
                "{other:?} pictures are not supported; send JPEG, PNG or WebP"
            )));
        }
    };
    let mut dynimg = DynamicImage::ImageRgb8(image);
    dynimg.apply_orientation(orientation);
    let (full_width, full_height) = if matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    ) {
        (full_h, full_w)
    } else {
        (full_w, full_h)
    };
    let mut image = dynimg.into_rgb8();
    let long = image.width().max(image.height());
    if long > limits.work_side {
        let k = f64::from(limits.work_side) / f64::from(long);
        let w = ((f64::from(image.width()) * k).round() as u32).max(1);
        let h = ((f64::from(image.height()) * k).round() as u32).max(1);
        image = image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle);
    }
    let factor = f64::from(full_width) / f64::from(image.width().max(1));
    Ok(Decoded {
        image,
        full_width,
        full_height,
        factor,
        format,
    })
}

fn check_size(w: u32, h: u32, limits: &DecodeLimits) -> Result<(), Error> {
    if w == 0 || h == 0 {
        return Err(Error::NotAnImage(format!(
            "the picture claims to be {w} x {h} pixels"
        )));
    }
    if w > limits.max_side || h > limits.max_side || u64::from(w) * u64::from(h) > limits.max_pixels
    {
        return Err(Error::TooLarge(format!(
            "the picture claims {w} x {h} pixels; at most {} megapixels and {} pixels a side are accepted",
            limits.max_pixels / 1_000_000,
            limits.max_side
        )));
    }
    Ok(())
}

type Raw = (RgbImage, u32, u32, Orientation);

fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<Raw, Error> {
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().map_err(|e| jpeg_error(&e))?;
    let info = dec
        .info()
        .ok_or_else(|| Error::Corrupt("the JPEG has no frame header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_size(w, h, limits)?;
    // The coarsest IDCT scale whose output still has a long side near the working side:
    // the entropy decoding costs the same at every scale, the rest scales with the output.
    let long = w.max(h);
    let want = (limits.work_side - limits.work_side / 10).max(1);
    let mut denom = 8;
    while denom > 1 && long / denom < want {
        denom /= 2;
    }
    let orientation = dec
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    // At 1/8 only the DC terms matter: our own decoder skips the rest without storing
    // them, for the baseline files phones write; anything else goes to jpeg_decoder.
    if denom == 8
        && let Some(rgb) = crate::jpeg_dc::decode(bytes)
    {
        return Ok((rgb, w, h, orientation));
    }
    let (rw, rh) = ((w / denom).max(1), (h / denom).max(1));
    let (sw, sh) = dec
        .scale(rw.min(65_535) as u16, rh.min(65_535) as u16)
        .map_err(|e| jpeg_error(&e))?;
    // Bounds what a lying header or a progressive file can make the decoder allocate.
    dec.set_max_decoding_buffer_size(
        (u64::from(sw) * u64::from(sh) * 4).min(limits.max_pixels * 4) as usize,
    );
    let pixels = dec.decode().map_err(|e| jpeg_error(&e))?;
    let info = dec
        .info()
        .ok_or_else(|| Error::Corrupt("the JPEG has no frame header".into()))?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(sw, sh, pixels),
        jpeg_decoder::PixelFormat::L8 => {
            RgbImage::from_raw(sw, sh, pixels.iter().flat_map(|&v| [v, v, v]).collect())
        }
        jpeg_decoder::PixelFormat::L16 => RgbImage::from_raw(
            sw,
            sh,
            pixels
                .chunks_exact(2)
                .flat_map(|c| [c[0], c[0], c[0]])
                .collect(),
        ),
        jpeg_decoder::PixelFormat::CMYK32 => RgbImage::from_raw(
            sw,
            sh,
            pixels
                .chunks_exact(4)
                .flat_map(|c| {
                    let k = u16::from(c[3]);
                    [c[0], c[1], c[2]].map(|v| ((u16::from(v) * k) / 255) as u8)
                })
                .collect(),
        ),
    }
    .ok_or_else(|| {
        Error::Corrupt("the JPEG decoded to fewer pixels than its header claims".into())
    })?;
    Ok((rgb, w, h, orientation))
}

fn jpeg_error(e: &jpeg_decoder::Error) -> Error {
    match e {
        jpeg_decoder::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Corrupt("the JPEG is truncated".into())
        }
        jpeg_decoder::Error::Unsupported(f) => {
            Error::Corrupt(format!("unsupported JPEG feature: {f:?}"))
        }
        other => Error::Corrupt(format!("the JPEG cannot be decoded: {other}")),
    }
}

fn decode_other(bytes: &[u8], format: ImageFormat, limits: &DecodeLimits) -> Result<Raw, Error> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Width and height are checked below from the header, for a message with the
    // numbers; the allocation bound stays as the backstop.
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_pixels * 4);
    reader.limits(l);
    let mut dec = reader.into_decoder().map_err(|e| image_error(format, e))?;
    let (w, h) = dec.dimensions();
    check_size(w, h, limits)?;
    let orientation = dec.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(dec).map_err(|e| image_error(format, e))?;
    Ok((img.into_rgb8(), w, h, orientation))
}

fn image_error(format: ImageFormat, e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::TooLarge(format!(
            "the {format:?} picture exceeds the decoding limits: {l}"
        )),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Corrupt(format!("the {format:?} picture is truncated"))
        }
        other => Error::Corrupt(format!("the {format:?} picture cannot be decoded: {other}")),
    }
}
