//! The annotated picture: each coin circled in its denomination's colour and labelled
//! (`1c`, `25c`, `$1`) with a built-in bitmap font, so no font file ships in the image.

use image::{Rgb, RgbImage};
use imageproc::drawing::draw_hollow_circle_mut;

use crate::value::Denomination;

/// 3x5 glyphs, one row a nibble (bit 2 = left column).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'c' => [0, 7, 4, 4, 7],
        '$' => [7, 6, 7, 3, 7],
        _ => [7, 1, 2, 0, 2],
    }
}

fn colour(d: Option<Denomination>) -> Rgb<u8> {
    match d {
        Some(Denomination::Penny) => Rgb([255, 120, 0]),
        Some(Denomination::Nickel) => Rgb([0, 200, 255]),
        Some(Denomination::Dime) => Rgb([255, 0, 200]),
        Some(Denomination::Quarter) => Rgb([0, 230, 0]),
        Some(Denomination::HalfDollar) => Rgb([255, 255, 0]),
        Some(Denomination::Dollar) => Rgb([160, 80, 255]),
        None => Rgb([255, 0, 0]),
    }
}

fn text(img: &mut RgbImage, x0: i64, y0: i64, s: &str, px: i64, fg: Rgb<u8>) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let mut put = |x: i64, y: i64, c: Rgb<u8>| {
        if x >= 0 && y >= 0 && x < w && y < h {
            img.put_pixel(x as u32, y as u32, c);
        }
    };
    for (i, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        let gx = x0 + i as i64 * 4 * px;
        // A dark box behind the label keeps it readable on any background.
        for y in -1..6 * px {
            for x in -1..4 * px {
                put(gx + x, y0 + y, Rgb([0, 0, 0]));
            }
        }
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..px {
                        for dx in 0..px {
                            put(gx + col * px + dx, y0 + row as i64 * px + dy, fg);
                        }
                    }
                }
            }
        }
    }
}

/// One coin to draw, in working-picture pixels.
#[derive(Debug, Clone)]
pub struct Mark {
    pub x: f64,
    pub y: f64,
    pub r: f64,
    pub denomination: Option<Denomination>,
}

/// Draws the marks and the total on a copy of `img`, returned as JPEG bytes.
pub fn annotate(img: &RgbImage, marks: &[Mark], total_cents: i64) -> Vec<u8> {
    let mut out = img.clone();
    let px = i64::from((out.width().max(out.height()) / 400).max(1));
    for m in marks {
        let c = colour(m.denomination);
        for t in 0..(px as i32 + 1) {
            draw_hollow_circle_mut(
                &mut out,
                (m.x.round() as i32, m.y.round() as i32),
                m.r.round() as i32 + t,
                c,
            );
        }
        let label = m.denomination.map_or("?", Denomination::label);
        let lw = label.len() as i64 * 4 * px;
        text(
            &mut out,
            m.x.round() as i64 - lw / 2,
            m.y.round() as i64 - 3 * px,
            label,
            px,
            c,
        );
    }
    let total = format!("{}", total_cents);
    text(
        &mut out,
        4 * px,
        4 * px,
        &format!("{total}c"),
        2 * px,
        Rgb([255, 255, 255]),
    );
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 85);
    // Encoding an in-memory RGB picture to a Vec cannot fail short of out-of-memory.
    let _ = out.write_with_encoder(enc);
    buf
}
