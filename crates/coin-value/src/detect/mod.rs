//! Finding coins in a working-size picture, without knowing their size in advance:
//!
//! 1. flatten uneven light: a smooth surface fitted robustly to block medians is the
//!    background; every pixel's colour distance from it, in units of the background's
//!    own texture, is its "coin-ness" score;
//! 2. threshold the score (Otsu, never below a noise floor), clean the mask, fill holes;
//! 3. split touching coins at the peaks of the Euclidean distance transform;
//! 4. refine every candidate on the picture itself: the strongest colour edge on rays
//!    from its centre (sub-pixel, and stopping where a touching neighbour's territory
//!    begins), moved to the dark line of bevel and contact shadow when there is one (the
//!    edge lies inside it for coins brighter than the table, outside for darker ones),
//!    with a robust circle fit, so soft shadows and blur do not bias the diameter;
//!    shapes whose edges are not a circle are rejected;
//! 5. find what colour missed (a silver coin on grey stone) by its edges alone
//!    (`vote`), refine it the same way, and keep it only if its rim is a clean circle
//!    clearly stronger than the table's texture; it replaces a weaker circle found
//!    inside it (a fragment of the same coin).
//!
//! Everything runs on float planes of the ~500 px working picture, with the transforms
//! (blur, opening, distance transform, labelling) written as row passes: at that size
//! the detector costs a fraction of the JPEG's entropy decoding.

// Pixel loops index several parallel planes by channel; iterators would hide that.
#![allow(clippy::needless_range_loop)]

use image::{GrayImage, RgbImage};

mod vote;

/// One circle found in the working picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Circle {
    pub x: f64,
    pub y: f64,
    pub r: f64,
    /// Share of rays whose edge agrees with the fitted circle (0..1).
    pub support: f64,
    /// (R - B) / (R + G + B) of the coin's face: copper is warm, silver near 0.
    pub warmth: f64,
    /// HSV saturation of the face's mean colour.
    pub saturation: f64,
}

/// Detector tunables; defaults suit phone photos reduced to ~500 px.
#[derive(Debug, Clone)]
pub struct DetectParams {
    pub rays: usize,
    /// Smallest coin radius considered, as a fraction of the long side (floored at 4 px).
    pub min_radius_frac: f64,
    /// Noise floor of the threshold, in background-texture units.
    pub min_score: f32,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            rays: 72,
            min_radius_frac: 0.006,
            min_score: 4.0,
        }
    }
}

/// Three float planes of the (slightly blurred) picture.
struct Planes {
    w: usize,
    h: usize,
    c: [Vec<f32>; 3],
}

impl Planes {
    /// The picture's three planes blurred by a Gaussian in floats (edges clamped), as
    /// whole-row multiply-adds the compiler vectorises; read straight from the 8-bit
    /// picture so no unblurred float copy is made.
    fn blurred(img: &RgbImage, sigma: f32) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let r = (2.0 * sigma).ceil() as usize;
        let mut k: Vec<f32> = (0..=2 * r)
            .map(|i| {
                let x = i as f32 - r as f32;
                (-x * x / (2.0 * sigma * sigma).max(1e-6)).exp()
            })
            .collect();
        let sum: f32 = k.iter().sum();
        k.iter_mut().for_each(|x| *x /= sum);
        let src = img.as_raw();
        let mut pad = vec![0f32; w + 2 * r];
        let mut tmp = vec![0f32; w * h];
        let c = std::array::from_fn(|ch| {
            for y in 0..h {
                let row = &src[y * w * 3..(y + 1) * w * 3];
                for (p, v) in pad[r..r + w].iter_mut().zip(row.iter().skip(ch).step_by(3)) {
                    *p = f32::from(*v);
                }
                let (first, last) = (pad[r], pad[r + w - 1]);
                pad[..r].fill(first);
                pad[r + w..].fill(last);
                let acc = &mut tmp[y * w..(y + 1) * w];
                acc.fill(0.0);
                for (t, &kt) in k.iter().enumerate() {
                    for (a, &p) in acc.iter_mut().zip(&pad[t..t + w]) {
                        *a += p * kt;
                    }
                }
            }
            let mut out = vec![0f32; w * h];
            for y in 0..h {
                let acc = &mut out[y * w..(y + 1) * w];
                for (t, &kt) in k.iter().enumerate() {
                    let sy = (y + t).saturating_sub(r).min(h - 1);
                    for (a, &p) in acc.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                        *a += p * kt;
                    }
                }
            }
            out
        });
        Self { w, h, c }
    }

    /// Bilinear sample of all three channels; (x, y) is clamped into the picture.
    #[inline(always)]
    fn sample3(&self, x: f64, y: f64) -> [f32; 3] {
        let x = x.clamp(0.0, (self.w - 1) as f64);
        let y = y.clamp(0.0, (self.h - 1) as f64);
        let (x0, y0) = (x as usize, y as usize);
        let dx = usize::from(x0 + 1 < self.w);
        let dy = if y0 + 1 < self.h { self.w } else { 0 };
        let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
        let i = y0 * self.w + x0;
        let at = |p: &[f32]| {
            let (p00, p01, p10, p11) = (p[i], p[i + dx], p[i + dy], p[i + dy + dx]);
            let a = p00 + (p01 - p00) * fx;
            let b = p10 + (p11 - p10) * fx;
            a + (b - a) * fy
        };
        [at(&self.c[0]), at(&self.c[1]), at(&self.c[2])]
    }
}

/// Finds the coins of `img`.
pub fn detect(img: &RgbImage, params: &DetectParams) -> Vec<Circle> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 8 || h < 8 {
        return Vec::new();
    }
    let planes = Planes::blurred(img, 1.0);
    let long = w.max(h) as f64;
    // The score is taken on a softer copy: coins are tens of pixels wide, table texture
    // (speckled stone, weave) a few, so averaging lowers the noise far more than the signal.
    // At the working size the two blurs are the same and one serves both.
    let soft_sigma = (long / 500.0).max(1.0) as f32;
    let soft = (soft_sigma > 1.2).then(|| Planes::blurred(img, soft_sigma));
    let score = score(soft.as_ref().unwrap_or(&planes));
    let min_r = (params.min_radius_frac * long).max(4.0);

    let thr = threshold(&score, params.min_score);
    let mask: Vec<u8> = score
        .iter()
        .map(|&s| if s >= thr { 255 } else { 0 })
        .collect();
    let mask = open3(&mask, w, h);
    let mut mask = GrayImage::from_raw(w as u32, h as u32, mask).unwrap_or_default();
    fill_holes(&mut mask);

    let seeds = seeds(&mask, min_r);
    let mut found: Vec<Circle> = Vec::new();
    for (i, &(sx, sy, sr)) in seeds.iter().enumerate() {
        let others: Vec<(f64, f64, f64)> = seeds
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &o)| o)
            .collect();
        let Some(c) = refine(
            &planes,
            (&mask, &score),
            (sx, sy, sr),
            &others,
            params.rays,
            min_r,
            Cue::Colour,
        ) else {
            continue;
        };
        // Two seeds of one coin refine to the same circle; keep the better supported.
        if let Some(j) = found
            .iter()
            .position(|o| (o.x - c.x).hypot(o.y - c.y) < 0.5 * o.r.max(c.r))
        {
            if found[j].support < c.support {
                found[j] = c;
            }
            continue;
        }
        found.push(c);
    }
    // Coins the colour cue missed (a face the colour of the table) are found by their
    // edges, at radii a coin could have next to those already found.
    let known: Vec<(f64, f64, f64)> = found.iter().map(|c| (c.x, c.y, c.r)).collect();
    // Only well-fitted circles keep edge voting away: a poor one may be a fragment of
    // a coin that voting finds whole.
    let settled: Vec<(f64, f64, f64)> = found
        .iter()
        .filter(|c| c.support >= SETTLED)
        .map(|c| (c.x, c.y, c.r))
        .collect();
    let (r_lo, r_hi) = match known.iter().map(|c| c.2).reduce(f64::min) {
        Some(least) => {
            let most = known.iter().map(|c| c.2).fold(0.0, f64::max);
            ((least / RADIUS_SPAN).max(min_r), most * RADIUS_SPAN)
        }
        None => (min_r, MAX_RADIUS_FRAC * long),
    };
    let edges = vote::Edges::new(&planes, &settled, EDGE_THRESHOLD);
    let voted = vote::seeds(&edges, &settled, r_lo, r_hi.min(MAX_RADIUS_FRAC * long));
    for (i, &seed) in voted.iter().enumerate() {
        let others: Vec<(f64, f64, f64)> = known
            .iter()
            .chain(voted.iter().take(i))
            .chain(voted.iter().skip(i + 1))
            .copied()
            .collect();
        let Some(c) = refine(
            &planes,
            (&mask, &score),
            seed,
            &others,
            params.rays,
            min_r,
            Cue::Edges,
        ) else {
            continue;
        };
        let contrast = edges.rim_contrast(c.x, c.y, c.r);
        if contrast < MIN_RIM_CONTRAST {
            continue;
        }
        // Coins do not overlap: a circle across one already found is its shadow or rim,
        // unless what was found is a weaker circle centred inside this one (a fragment
        // of its face, say a patch of relief the colour cue caught, or the same coin
        // measured across a touching neighbour's edge).
        let overlapping: Vec<usize> = (0..found.len())
            .filter(|&j| (found[j].x - c.x).hypot(found[j].y - c.y) < 0.85 * (found[j].r + c.r))
            .collect();
        let fragment = |o: &Circle| {
            (o.x - c.x).hypot(o.y - c.y) < 0.9 * c.r
                && o.r < 1.25 * c.r
                && o.support + 0.1 <= c.support
        };
        if !overlapping.iter().all(|&j| fragment(&found[j])) {
            continue;
        }
        for j in overlapping.into_iter().rev() {
            found.remove(j);
        }
        found.push(c);
    }
    found
}

/// Edges that vote are this many times stronger than the table's median gradient.
const EDGE_THRESHOLD: f32 = 2.5;

/// How much stronger than the table's texture a circle found by edges alone must be
/// along its rim: round blobs of cloth or stone texture reach 2 to 3.
const MIN_RIM_CONTRAST: f64 = 3.5;

/// Support of a circle that edge voting leaves alone.
const SETTLED: f64 = 0.85;

/// Largest over smallest diameter of US coins in circulation (half dollar over dime,
/// 1.71) with room for perspective and error.
const RADIUS_SPAN: f64 = 1.9;

/// Largest coin radius looked for by edges alone, as a fraction of the long side.
const MAX_RADIUS_FRAC: f64 = 0.15;

/// What found a candidate, and so what its face must show to count as a coin.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cue {
    /// The colour mask: the face must be foreground or differ from the table on average.
    Colour,
    /// Edge voting: the face may match the table, so the rim must be a clean circle.
    Edges,
}

/// Gaussian blur bit-identical to `imageproc::filter::gaussian_blur_f32` (same kernel,
/// edge padding, tap order and truncation to 8 bits after each pass), written as whole-row
/// multiply-adds the compiler vectorises: imageproc's per-pixel generic loop was most of
/// a count's time.
pub(crate) fn gaussian_blur(img: &RgbImage, sigma: f32) -> RgbImage {
    let r = (2.0 * sigma).ceil() as usize;
    let pdf = |x: f32| {
        (sigma * (2.0 * std::f32::consts::PI).sqrt()).recip()
            * (-x.powi(2) / (2.0 * sigma.powi(2))).exp()
    };
    let mut k = vec![0f32; 2 * r + 1];
    for i in 0..=r {
        let v = pdf(i as f32);
        k[r + i] = v;
        k[r - i] = v;
    }
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|x| *x /= sum);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = RgbImage::new(img.width(), img.height());
    if w == 0 || h == 0 {
        return out;
    }
    let src = img.as_raw();
    let mut tmp = vec![0u8; w * h * 3];
    let mut pad = vec![0f32; (w + 2 * r) * 3];
    let mut acc = vec![0f32; w * 3];
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for x in 0..w + 2 * r {
            let sx = x.saturating_sub(r).min(w - 1);
            for c in 0..3 {
                pad[x * 3 + c] = f32::from(row[sx * 3 + c]);
            }
        }
        acc.fill(0.0);
        for (t, &kt) in k.iter().enumerate() {
            for (a, &p) in acc.iter_mut().zip(&pad[t * 3..t * 3 + w * 3]) {
                *a += p * kt;
            }
        }
        for (o, &a) in tmp[y * w * 3..(y + 1) * w * 3].iter_mut().zip(&acc) {
            *o = a as u8;
        }
    }
    let dst = out.as_mut();
    for y in 0..h {
        acc.fill(0.0);
        for (t, &kt) in k.iter().enumerate() {
            let sy = (y + t).saturating_sub(r).min(h - 1);
            for (a, &p) in acc.iter_mut().zip(&tmp[sy * w * 3..(sy + 1) * w * 3]) {
                *a += f32::from(p) * kt;
            }
        }
        for (o, &a) in dst[y * w * 3..(y + 1) * w * 3].iter_mut().zip(&acc) {
            *o = a as u8;
        }
    }
    out
}

/// Per-pixel distance from the fitted background, in background-texture units, in an
/// opponent colour space: table textures (grain, weave, speckle) are mostly changes of
/// lightness, so a dark penny on dark wood still stands out in its chroma.
fn score(p: &Planes) -> Vec<f32> {
    let (w, h) = (p.w, p.h);
    let (bg, table) = background(p);
    // Along a row the surface is a quadratic in u alone: its coefficients per row.
    let row_coef = |y: usize| -> [[f32; 3]; 3] {
        let (_, v) = bg.uv(0.0, y as f64);
        std::array::from_fn(|k| {
            let c = &bg.coef[k];
            [
                (c[0] + c[2] * v + c[5] * v * v) as f32,
                (c[1] + c[4] * v) as f32,
                c[3] as f32,
            ]
        })
    };
    let us: Vec<f32> = (0..w)
        .map(|x| (2.0 * x as f64 / w as f64 - 1.0) as f32)
        .collect();
    let residual = |i: usize, x: usize, rc: &[[f32; 3]; 3]| -> [f32; 3] {
        let o = opp(p, i);
        let u = us[x];
        std::array::from_fn(|k| o[k] - (rc[k][0] + u * (rc[k][1] + u * rc[k][2])))
    };
    // The table's texture per channel, from a sample of residuals.
    let mut d: [Vec<f32>; 3] = Default::default();
    match &table {
        None => {
            for y in 0..h {
                let rc = row_coef(y);
                let first = (5 - (y * w) % 5) % 5;
                for x in (first..w).step_by(5) {
                    let r = residual(y * w + x, x, &rc);
                    for k in 0..3 {
                        d[k].push(r[k].abs());
                    }
                }
            }
        }
        // Coins covering much of the picture would inflate a texture measured
        // everywhere and hide themselves: measure it only where the fit says table.
        Some(rects) => {
            for &(x0, y0, x1, y1) in rects {
                for y in (y0..y1).step_by(2) {
                    let rc = row_coef(y);
                    for x in (x0..x1).step_by(2) {
                        let r = residual(y * w + x, x, &rc);
                        for k in 0..3 {
                            d[k].push(r[k].abs());
                        }
                    }
                }
            }
        }
    }
    let inv = d.map(|mut d| 1.0 / (1.4826 * median(&mut d)).max(1.0));
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let rc = row_coef(y);
        let (r, g, b) = (
            &p.c[0][y * w..(y + 1) * w],
            &p.c[1][y * w..(y + 1) * w],
            &p.c[2][y * w..(y + 1) * w],
        );
        for (x, o) in out[y * w..(y + 1) * w].iter_mut().enumerate() {
            let u = us[x];
            let (r, g, b) = (r[x], g[x], b[x]);
            let e = [
                ((r + g + b) * (1.0 / 3.0) - (rc[0][0] + u * (rc[0][1] + u * rc[0][2]))) * inv[0],
                (r - g - (rc[1][0] + u * (rc[1][1] + u * rc[1][2]))) * inv[1],
                ((r + g) * 0.5 - b - (rc[2][0] + u * (rc[2][1] + u * rc[2][2]))) * inv[2],
            ];
            *o = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
        }
    }
    out
}

/// Pixel `i` in the opponent space the score works in: lightness, red-green,
/// yellow-blue.
#[inline]
fn opp(p: &Planes, i: usize) -> [f32; 3] {
    let (r, g, b) = (p.c[0][i], p.c[1][i], p.c[2][i]);
    [(r + g + b) * (1.0 / 3.0), r - g, (r + g) * 0.5 - b]
}

/// A quadratic surface per channel over normalised coordinates.
struct Surface {
    w: usize,
    h: usize,
    coef: [[f64; 6]; 3],
}

impl Surface {
    fn basis(u: f64, v: f64) -> [f64; 6] {
        [1.0, u, v, u * u, u * v, v * v]
    }

    fn uv(&self, x: f64, y: f64) -> (f64, f64) {
        (2.0 * x / self.w as f64 - 1.0, 2.0 * y / self.h as f64 - 1.0)
    }
}

/// Table blocks (x0, y0, x1, y1) a background was fitted to.
type Rects = Vec<(usize, usize, usize, usize)>;

/// Fits the background to block medians, dropping blocks that do not fit (coins,
/// shadows) by iterated reweighting: scale-free, unlike a fixed-size median filter.
/// When coins cover so much of the picture that the reweighting never lets go of them
/// (its scale stays several times that of a least-trimmed-squares fit on the better
/// half of the blocks), the trimmed fit is used and its table blocks are returned.
fn background(p: &Planes) -> (Surface, Option<Rects>) {
    let (w, h) = (p.w, p.h);
    let bs = (w.max(h) / 40).max(6);
    let mut blocks: Vec<(f64, f64, [f64; 3], [usize; 4])> = Vec::new();
    let mut bufs: [Vec<f32>; 3] = Default::default();
    for by in (0..h).step_by(bs) {
        for bx in (0..w).step_by(bs) {
            let (x1, y1) = ((bx + bs).min(w), (by + bs).min(h));
            if (x1 - bx) * (y1 - by) < bs * bs / 4 {
                continue;
            }
            // Every other pixel of every other row: as robust, a quarter of the work.
            for b in &mut bufs {
                b.clear();
            }
            for y in (by..y1).step_by(2) {
                for x in (bx..x1).step_by(2) {
                    let o = opp(p, y * w + x);
                    for k in 0..3 {
                        bufs[k].push(o[k]);
                    }
                }
            }
            let med = [0, 1, 2].map(|k| f64::from(median(&mut bufs[k])));
            blocks.push((
                (bx + x1) as f64 / 2.0,
                (by + y1) as f64 / 2.0,
                med,
                [bx, by, x1, y1],
            ));
        }
    }
    let mut s = Surface {
        w,
        h,
        coef: [[0.0; 6]; 3],
    };
    // The normal matrix depends only on which blocks are kept, not on the channel.
    let fit = |s: &mut Surface, keep: &[bool]| {
        let mut ata = [[0f64; 6]; 6];
        let mut atb = [[0f64; 6]; 3];
        for (b, _) in blocks.iter().zip(keep).filter(|(_, k)| **k) {
            let (u, v) = s.uv(b.0, b.1);
            let f = Surface::basis(u, v);
            for i in 0..6 {
                for j in i..6 {
                    ata[i][j] += f[i] * f[j];
                }
                for k in 0..3 {
                    atb[k][i] += f[i] * b.2[k];
                }
            }
        }
        for i in 0..6 {
            for j in 0..i {
                ata[i][j] = ata[j][i];
            }
        }
        for k in 0..3 {
            if let Some(c) = solve(ata, atb[k]) {
                s.coef[k] = c;
            }
        }
    };
    let residuals = |s: &Surface| -> Vec<f32> {
        blocks
            .iter()
            .map(|b| {
                let (u, v) = s.uv(b.0, b.1);
                let f = Surface::basis(u, v);
                (0..3)
                    .map(|k| {
                        let e = b.2[k] - f.iter().zip(&s.coef[k]).map(|(a, c)| a * c).sum::<f64>();
                        e * e
                    })
                    .sum::<f64>()
                    .sqrt() as f32
            })
            .collect()
    };
    // Iterated reweighting from all blocks.
    let mut keep = vec![true; blocks.len()];
    let mut scale = 0.0;
    for _ in 0..8 {
        fit(&mut s, &keep);
        let res = residuals(&s);
        let mut kept: Vec<f32> = res
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(r, _)| *r)
            .collect();
        scale = (1.4826 * median(&mut kept)).max(2.0);
        let next: Vec<bool> = res.iter().map(|r| *r <= 2.5 * scale).collect();
        if next.iter().filter(|k| **k).count() < 6 || next == keep {
            break;
        }
        keep = next;
    }
    // Least trimmed squares: refit on the better half until that half stops changing.
    let mut t = Surface {
        w,
        h,
        coef: [[0.0; 6]; 3],
    };
    let mut half = vec![true; blocks.len()];
    let mut res = Vec::new();
    for _ in 0..12 {
        fit(&mut t, &half);
        res = residuals(&t);
        let mid = median(&mut res.clone());
        let next: Vec<bool> = res.iter().map(|r| *r <= mid).collect();
        if next.iter().filter(|k| **k).count() < 6 || next == half {
            break;
        }
        half = next;
    }
    let mut kept: Vec<f32> = res
        .iter()
        .zip(&half)
        .filter(|(_, k)| **k)
        .map(|(r, _)| *r)
        .collect();
    let trimmed_scale = (1.4826 * median(&mut kept)).max(0.8);
    if scale <= 3.0 * trimmed_scale {
        return (s, None);
    }
    let table: Vec<bool> = res.iter().map(|r| *r <= 2.5 * trimmed_scale).collect();
    if table.iter().filter(|k| **k).count() >= 6 {
        half = table;
        fit(&mut t, &half);
    }
    let rects = blocks
        .iter()
        .zip(&half)
        .filter(|(_, k)| **k)
        .map(|(b, _)| (b.3[0], b.3[1], b.3[2], b.3[3]))
        .collect();
    (t, Some(rects))
}

/// Solves a small symmetric system by Gaussian elimination with partial pivoting.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let piv = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..N {
            let f = a[row][col] / a[col][col];
            for k in col..N {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0f64; N];
    for row in (0..N).rev() {
        let s: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Otsu's level over the score histogram, never below the noise floor.
fn threshold(score: &[f32], floor: f32) -> f32 {
    const BINS: usize = 256;
    const TOP: f32 = 64.0;
    let mut hist = [0u64; BINS];
    for &s in score {
        let b = ((s / TOP) * (BINS - 1) as f32).clamp(0.0, (BINS - 1) as f32) as usize;
        hist[b] += 1;
    }
    let total: u64 = hist.iter().sum();
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0u64, 0f64, -1f64, 0usize);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (sum_all - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    let otsu = (best_t as f32 + 0.5) / (BINS - 1) as f32 * TOP;
    // Otsu alone splits bright coins from dim ones when both are present; anything many
    // texture units from the background is foreground whatever Otsu says.
    otsu.clamp(floor, 1.25 * floor)
}

/// Morphological opening of a 0/255 mask by a 3 x 3 square (pixels outside the picture
/// are ignored), as separable row and column minima then maxima.
fn open3(m: &[u8], w: usize, h: usize) -> Vec<u8> {
    let pass = |src: &[u8], take_min: bool| -> Vec<u8> {
        let f = |a: u8, b: u8| if take_min { a.min(b) } else { a.max(b) };
        let mut tmp = src.to_vec();
        for y in 0..h {
            let (r, o) = (&src[y * w..(y + 1) * w], &mut tmp[y * w..(y + 1) * w]);
            for ((v, &a), &b) in o[1..].iter_mut().zip(&r[..w - 1]).zip(&r[1..]) {
                *v = f(a, b);
            }
            for ((v, &a), &b) in o[1..w - 1].iter_mut().zip(&r[..w - 2]).zip(&r[2..]) {
                *v = f(*v, f(a, b));
            }
            o[0] = f(r[0], r[1]);
        }
        let mut out = tmp.clone();
        for y in 0..h {
            let o = &mut out[y * w..(y + 1) * w];
            if y > 0 {
                for (v, &a) in o.iter_mut().zip(&tmp[(y - 1) * w..y * w]) {
                    *v = f(*v, a);
                }
            }
            if y + 1 < h {
                for (v, &a) in o.iter_mut().zip(&tmp[(y + 1) * w..(y + 2) * w]) {
                    *v = f(*v, a);
                }
            }
        }
        out
    };
    pass(&pass(m, true), false)
}

/// Euclidean distance of every foreground pixel to the nearest background pixel of the
/// picture (Felzenszwalb and Huttenlocher's exact transform, one column then one row
/// pass of lower envelopes of parabolas).
fn distance_to_background(m: &[u8], w: usize, h: usize) -> Vec<f32> {
    const INF: f32 = 1e20;
    let mut f: Vec<f32> = m.iter().map(|&v| if v == 0 { 0.0 } else { INF }).collect();
    let n = w.max(h);
    let (mut line, mut out) = (vec![0f32; n], vec![0f32; n]);
    let (mut v, mut z) = (vec![0usize; n], vec![0f32; n + 1]);
    // Lower envelope of the parabolas rooted at the finite samples of `line`.
    let mut edt1 = |line: &[f32], out: &mut [f32]| {
        let Some(first) = line.iter().position(|&d| d < INF) else {
            out.fill(INF);
            return;
        };
        let mut k = 0;
        v[0] = first;
        z[0] = -INF;
        z[1] = INF;
        for q in first + 1..line.len() {
            if line[q] >= INF {
                continue;
            }
            let fq = line[q] + (q * q) as f32;
            loop {
                let p = v[k];
                let s = (fq - (line[p] + (p * p) as f32)) / (2.0 * (q - p) as f32);
                if s <= z[k] {
                    // z[0] is -inf, so this stops at k = 0.
                    k -= 1;
                    continue;
                }
                k += 1;
                v[k] = q;
                z[k] = s;
                z[k + 1] = INF;
                break;
            }
        }
        k = 0;
        for (q, o) in out.iter_mut().enumerate() {
            while z[k + 1] < q as f32 {
                k += 1;
            }
            let d = q as f32 - v[k] as f32;
            *o = d * d + line[v[k]];
        }
    };
    // Down each column the distance to the nearest background pixel is a pair of
    // sweeps, done a whole row at a time so they stay in cache and vectorise.
    for y in 1..h {
        let (above, row) = f.split_at_mut(y * w);
        for (d, &a) in row[..w].iter_mut().zip(&above[(y - 1) * w..]) {
            *d = d.min(a + 1.0);
        }
    }
    for y in (0..h.saturating_sub(1)).rev() {
        let (row, below) = f.split_at_mut((y + 1) * w);
        for (d, &b) in row[y * w..].iter_mut().zip(&below[..w]) {
            *d = d.min(b + 1.0);
        }
    }
    for d in f.iter_mut() {
        *d = if *d >= INF { INF } else { *d * *d };
    }
    // Along a row, each run of foreground only needs the background pixel at either
    // end: any site beyond those is both farther and no lower.
    for y in 0..h {
        let row = &mut f[y * w..(y + 1) * w];
        let mut x = 0;
        while x < w {
            if row[x] == 0.0 {
                x += 1;
                continue;
            }
            let a = x;
            while x < w && row[x] != 0.0 {
                x += 1;
            }
            let (lo, hi) = (a.saturating_sub(1), x.min(w - 1));
            line[lo..=hi].copy_from_slice(&row[lo..=hi]);
            edt1(&line[lo..=hi], &mut out[lo..=hi]);
            for (d, &o) in row[a..x].iter_mut().zip(&out[a..x]) {
                *d = o.sqrt();
            }
        }
    }
    f
}

/// 8-connected labels of the foreground (0 is background) and how many there are.
fn label(m: &[u8], w: usize, h: usize) -> (Vec<u32>, usize) {
    let mut lab = vec![0u32; w * h];
    let mut n = 0u32;
    let mut stack = Vec::new();
    for start in 0..w * h {
        if m[start] == 0 || lab[start] != 0 {
            continue;
        }
        n += 1;
        lab[start] = n;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if m[j] != 0 && lab[j] == 0 {
                        lab[j] = n;
                        stack.push(j);
                    }
                }
            }
        }
    }
    (lab, n as usize)
}

/// Sets to foreground every background region that does not reach the border.
fn fill_holes(mask: &mut GrayImage) {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let data = mask.as_mut();
    // 0 unvisited background, 1 reached from the border; foreground is never pushed.
    let mut outside = vec![0u8; w * h];
    let mut stack: Vec<usize> = Vec::new();
    let push = |i: usize, outside: &mut [u8], stack: &mut Vec<usize>| {
        if outside[i] == 0 && data[i] == 0 {
            outside[i] = 1;
            stack.push(i);
        }
    };
    for x in 0..w {
        push(x, &mut outside, &mut stack);
        push((h - 1) * w + x, &mut outside, &mut stack);
    }
    for y in 0..h {
        push(y * w, &mut outside, &mut stack);
        push(y * w + w - 1, &mut outside, &mut stack);
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        if x > 0 {
            push(i - 1, &mut outside, &mut stack);
        }
        if x + 1 < w {
            push(i + 1, &mut outside, &mut stack);
        }
        if y > 0 {
            push(i - w, &mut outside, &mut stack);
        }
        if y + 1 < h {
            push(i + w, &mut outside, &mut stack);
        }
    }
    for (d, o) in data.iter_mut().zip(&outside) {
        if *o == 0 {
            *d = 255;
        }
    }
}

/// One (x, y, r) seed per coin: distance-transform peaks, strongest first, skipping peaks
/// inside a coin already seeded (plateaus, shadow crescents).
fn seeds(mask: &GrayImage, min_r: f64) -> Vec<(f64, f64, f64)> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let dt = distance_to_background(mask.as_raw(), w, h);
    let (labels, nlab) = label(mask.as_raw(), w, h);
    let mut lab_max = vec![0f32; nlab + 1];
    for (&l, &d) in labels.iter().zip(&dt) {
        let l = l as usize;
        if d > lab_max[l] {
            lab_max[l] = d;
        }
    }
    let mut peaks: Vec<(f64, usize, usize, usize)> = Vec::new();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            let d = dt[i];
            if f64::from(d) < min_r {
                continue;
            }
            let l = labels[i] as usize;
            if d < 0.4 * lab_max[l] {
                continue;
            }
            let mut is_max = true;
            'n: for dy in [-1isize, 0, 1] {
                for dx in [-1isize, 0, 1] {
                    let j = (i as isize + dy * w as isize + dx) as usize;
                    if dt[j] > d {
                        is_max = false;
                        break 'n;
                    }
                }
            }
            if is_max {
                peaks.push((f64::from(d), x, y, l));
            }
        }
    }
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<(f64, f64, f64)> = Vec::new();
    for (d, x, y, _) in peaks {
        let (fx, fy) = (x as f64, y as f64);
        if out
            .iter()
            .any(|&(ox, oy, or)| (ox - fx).powi(2) + (oy - fy).powi(2) < or.max(0.9 * d).powi(2))
        {
            continue;
        }
        out.push((fx, fy, d));
    }
    out
}

/// Fits a circle (cx, cy, r) to points, algebraically (Kåsa).
fn fit_circle(pts: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let mut a = [[0f64; 3]; 3];
    let mut b = [0f64; 3];
    for &(x, y) in pts {
        let (x, y) = (x - mx, y - my);
        let f = [x, y, 1.0];
        let z = -(x * x + y * y);
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += f[i] * f[j];
            }
            b[i] += f[i] * z;
        }
    }
    let [d, e, f] = solve(a, b)?;
    let (cx, cy) = (-d / 2.0, -e / 2.0);
    let r2 = cx * cx + cy * cy - f;
    (r2 > 0.0).then(|| (cx + mx, cy + my, r2.sqrt()))
}

/// Strongest colour edge on each ray from (cx, cy) between `lo` and `hi`, moved to the
/// dark rim line next to it when `valley` (a search width in samples) is given.
#[allow(clippy::too_many_arguments)]
fn ray_edges(
    p: &Planes,
    (cx, cy): (f64, f64),
    lo: f64,
    hi: f64,
    rays: usize,
    inner: f32,
    (rc, others): (f64, &[(f64, f64, f64)]),
    valley: Option<usize>,
) -> (Vec<(f64, f64, f64)>, usize, usize) {
    let step = 0.5;
    let (mut outside, mut blocked) = (0, 0);
    // The valley search looks `pre` samples further in than the edge search.
    let pre = 2 * valley.unwrap_or(0);
    let base = lo - step - pre as f64 * step;
    let n = ((hi - lo) / step).ceil() as usize + 3 + pre;
    let mut prof = vec![[0f32; 3]; n];
    let mut out = Vec::with_capacity(rays);
    for i in 0..rays {
        let a = i as f64 * std::f64::consts::TAU / rays as f64;
        let (dx, dy) = (a.cos(), a.sin());
        // Rays leaving the picture have no edge to find there.
        let far = (cx + dx * hi, cy + dy * hi);
        if far.0 < 1.0 || far.1 < 1.0 || far.0 > (p.w - 2) as f64 || far.1 > (p.h - 2) as f64 {
            outside += 1;
            continue;
        }
        // A touching neighbour's far rim is often a stronger edge than the faint line
        // where two coins meet: stop at the power-diagram boundary with each nearby
        // seed (where the coins touch if the radii are right), a pixel past it.
        let mut stop = f64::INFINITY;
        for &(ox, oy, or) in others {
            let (vx, vy) = (ox - cx, oy - cy);
            let along = dx * vx + dy * vy;
            let d2 = vx * vx + vy * vy;
            if along > 0.0 && d2 > 1.0 && d2 < (2.0 * (rc + or)).powi(2) {
                stop = stop.min((d2 + rc * rc - or * or) / (2.0 * along) + 1.0);
            }
        }
        // Nor do rays that reach a neighbour before the band starts.
        if stop < lo + 2.0 * step {
            blocked += 1;
            continue;
        }
        for (j, v) in prof.iter_mut().enumerate() {
            let t = (base + j as f64 * step).max(0.0).min(stop);
            *v = p.sample3(cx + dx * t, cy + dy * t);
        }
        let grad = |j: usize| -> f32 {
            (0..3)
                .map(|k| (prof[j + 1][k] - prof[j - 1][k]).abs())
                .sum::<f32>()
        };
        let g: Vec<f32> = (1..n - 1).map(grad).collect();
        let top = g[pre..].iter().copied().fold(0f32, f32::max);
        // The innermost strong edge: shadows and contact shadows add edges outside the
        // rim, rarely inside it.
        let (mut best, mut bj) = (0f32, 0usize);
        for j in pre.max(1)..g.len().saturating_sub(1) {
            if g[j] >= inner * top && g[j] >= g[j - 1] && g[j] >= g[j + 1] {
                best = g[j];
                bj = j + 1;
                break;
            }
        }
        if bj < 2 || bj > n - 3 || best <= 0.0 {
            continue;
        }
        // Parabolic peak for sub-sample position.
        let (gm, g0, gp) = (grad(bj - 1), best, grad(bj + 1));
        let den = gm - 2.0 * g0 + gp;
        let off = if den.abs() > 1e-6 {
            (0.5 * (gm - gp) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        let mut pos = bj as f64 + f64::from(off);
        if let Some(v) = valley.and_then(|m| dark_valley(&prof, bj, m)) {
            pos = v;
        }
        let t = base + pos * step;
        out.push((cx + dx * t, cy + dy * t, f64::from(best)));
    }
    (out, outside, blocked)
}

/// Where a coin lies on a table its rim is a dark line (the coin's bevel, the contact
/// shadow under it), and the strongest edge is one side of it: inside when the face is
/// brighter than the table, outside (past any cast shadow) when darker, so coins of the
/// two metals would be measured with opposite biases. The darkest point of a clear
/// valley within `m` samples of the edge `bj` is the rim itself; no valley, no change.
/// `prof` holds at least `2 m` samples before `bj`.
fn dark_valley(prof: &[[f32; 3]], bj: usize, m: usize) -> Option<f64> {
    let l = |j: usize| prof[j][0] + prof[j][1] + prof[j][2];
    let (a, b) = (bj.saturating_sub(m).max(1), (bj + m).min(prof.len() - 2));
    let jm = (a..=b).min_by(|&x, &y| l(x).total_cmp(&l(y)))?;
    if jm == a || jm == b {
        return None;
    }
    // Both sides, within `m` samples of the bottom, must rise clearly above it: a dark
    // line, not a step.
    let left = (jm.saturating_sub(m)..jm).map(l).fold(f32::MIN, f32::max);
    let right = (jm + 1..=(jm + m).min(prof.len() - 1))
        .map(l)
        .fold(f32::MIN, f32::max);
    let depth = left.min(right) - l(jm);
    if depth < VALLEY_DEPTH * left.max(right).max(1.0) {
        return None;
    }
    let (lm, l0, lp) = (l(jm - 1), l(jm), l(jm + 1));
    let den = lm - 2.0 * l0 + lp;
    let off = if den.abs() > 1e-6 {
        (0.5 * (lm - lp) / den).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    Some(jm as f64 + f64::from(off))
}

/// How much darker than its brighter shoulder, relatively, a rim line must be.
const VALLEY_DEPTH: f32 = 0.04;

/// Share of rays and spread of the rim a circle found by edges alone must have: its face
/// is no evidence, so the rim must be cleaner than a colour-found coin's.
const EDGE_SUPPORT: f64 = 0.75;
const EDGE_RMS: f64 = 0.04;

/// An edge this strong relative to the ray's strongest counts as the rim.
const INNER_EDGE: f32 = 1.0;

/// Robust circle fit: refit without points far from the current circle.
fn robust_fit(edges: &[(f64, f64, f64)]) -> Option<((f64, f64, f64), usize, f64)> {
    let mut pts: Vec<(f64, f64)> = edges.iter().map(|e| (e.0, e.1)).collect();
    let mut circle = fit_circle(&pts)?;
    for _ in 0..5 {
        let all: Vec<(f64, f64)> = edges.iter().map(|e| (e.0, e.1)).collect();
        let mut res: Vec<f32> = all
            .iter()
            .map(|&(x, y)| ((x - circle.0).hypot(y - circle.1) - circle.2).abs() as f32)
            .collect();
        let mad = f64::from(median(&mut res.clone()));
        let tol = (3.0 * 1.4826 * mad).max(1.0).min(0.15 * circle.2);
        pts = all
            .into_iter()
            .zip(res.iter_mut())
            .filter(|(_, r)| f64::from(**r) <= tol)
            .map(|(p, _)| p)
            .collect();
        circle = fit_circle(&pts)?;
    }
    let rms = (pts
        .iter()
        .map(|&(x, y)| {
            let e = (x - circle.0).hypot(y - circle.1) - circle.2;
            e * e
        })
        .sum::<f64>()
        / pts.len().max(1) as f64)
        .sqrt();
    Some((circle, pts.len(), rms))
}

/// Refines a seed to the coin's rim, or rejects it as not a coin.
#[allow(clippy::too_many_arguments)]
fn refine(
    p: &Planes,
    (mask, score): (&GrayImage, &[f32]),
    (sx, sy, sr): (f64, f64, f64),
    others: &[(f64, f64, f64)],
    rays: usize,
    min_r: f64,
    cue: Cue,
) -> Option<Circle> {
    // Wide: a faint coin's seed may be a fragment of it.
    // Half the rays: this pass only has to find the coin, the next measures it.
    let (edges, _, _) = ray_edges(
        p,
        (sx, sy),
        0.5 * sr,
        1.8 * sr,
        rays / 2,
        1.0,
        (sr, others),
        None,
    );
    let ((cx, cy, r), _, _) = robust_fit(&edges)?;
    if !(0.5 * sr..=1.9 * sr).contains(&r) || (cx - sx).hypot(cy - sy) > 0.8 * sr {
        return None;
    }
    // Second pass centred on the first fit, in a narrow band, for accuracy.
    // Valley search within 15% of the radius (three working pixels at least) of the
    // edge: a soft cast shadow moves the edge that far out.
    let m = ((0.15 * r).max(3.0) / 0.5).round() as usize;
    let (edges, outside, blocked) = ray_edges(
        p,
        (cx, cy),
        0.8 * r,
        1.2 * r,
        rays,
        INNER_EDGE,
        (r, others),
        Some(m),
    );
    let ((cx, cy, r), kept, rms) = robust_fit(&edges)?;
    // The picture's border and touching neighbours are no evidence against a circle:
    // support counts the rays that reach the rim's band, of which there must be
    // enough, and most rays must stay inside the picture.
    let inside = rays - outside;
    let evidence = inside - blocked;
    let support = kept as f64 / evidence.max(1) as f64;
    if r < min_r
        || 2 * inside < rays
        || 3 * evidence < rays
        || support < 0.65
        || rms > 0.06 * r + 0.3
    {
        return None;
    }
    if cue == Cue::Edges
        && (support < EDGE_SUPPORT || rms > EDGE_RMS * r + 0.3 || 4 * inside < 3 * rays)
    {
        return None;
    }
    // The face must be foreground: a ring of edges around background is a hole or a ring.
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let (mut inside, mut fg, mut sc) = (0u32, 0u32, 0f64);
    let mut sum = [0f64; 3];
    let ri = (0.7 * r) as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if (dx * dx + dy * dy) as f64 > 0.49 * r * r {
                continue;
            }
            let (x, y) = (cx.round() as i64 + dx, cy.round() as i64 + dy);
            if x < 0 || y < 0 || x >= w || y >= h {
                continue;
            }
            inside += 1;
            let i = (y * w + x) as usize;
            if mask.as_raw()[i] != 0 {
                fg += 1;
            }
            sc += f64::from(score[i]);
            for (k, s) in sum.iter_mut().enumerate() {
                *s += f64::from(p.c[k][i]);
            }
        }
    }
    // Faint coins fill little of the mask but still differ from the table on average.
    let faint = f64::from(fg) < 0.6 * f64::from(inside) && sc / f64::from(inside) < 2.5;
    if inside == 0 || (cue == Cue::Colour && faint) {
        return None;
    }
    let [mr, mg, mb] = sum.map(|s| s / f64::from(inside));
    let total = (mr + mg + mb).max(1.0);
    let (mx, mn) = (mr.max(mg).max(mb), mr.min(mg).min(mb));
    Some(Circle {
        x: cx,
        y: cy,
        r,
        support,
        warmth: (mr - mb) / total,
        saturation: if mx > 0.0 { (mx - mn) / mx } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn random_mask(seed: u64, w: u32, h: u32) -> GrayImage {
        let mut rng = crate::synth::Rng::new(seed);
        // Blobs, so the transform has interiors to measure, plus speckle.
        let blobs: Vec<(f64, f64, f64)> = (0..6)
            .map(|_| {
                (
                    rng.range(0.0, 60.0),
                    rng.range(0.0, 40.0),
                    rng.range(3.0, 14.0),
                )
            })
            .collect();
        GrayImage::from_fn(w, h, |x, y| {
            let inside = blobs
                .iter()
                .any(|&(bx, by, r)| (f64::from(x) - bx).hypot(f64::from(y) - by) < r);
            Luma([if inside || rng.below(40) == 0 { 255 } else { 0 }])
        })
    }

    #[test]
    fn distance_transform_matches_imageproc() {
        for seed in 0..5 {
            let m = random_mask(seed, 61, 43);
            let mut inv = m.clone();
            inv.as_mut().iter_mut().for_each(|v| *v = 255 - *v);
            let want = imageproc::distance_transform::euclidean_squared_distance_transform(&inv);
            let got = distance_to_background(m.as_raw(), 61, 43);
            for (g, w) in got.iter().zip(want.as_raw()) {
                assert!(
                    (f64::from(*g) - w.sqrt()).abs() < 1e-3,
                    "seed {seed}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn opening_matches_imageproc() {
        for seed in 0..5 {
            let m = random_mask(seed, 61, 43);
            let want =
                imageproc::morphology::open(&m, imageproc::distance_transform::Norm::LInf, 1);
            assert_eq!(open3(m.as_raw(), 61, 43), want.into_raw(), "seed {seed}");
        }
    }

    #[test]
    fn labels_count_components() {
        let m = random_mask(3, 61, 43);
        let (lab, n) = label(m.as_raw(), 61, 43);
        let want = imageproc::region_labelling::connected_components(
            &m,
            imageproc::region_labelling::Connectivity::Eight,
            Luma([0u8]),
        );
        assert_eq!(n as u32, want.as_raw().iter().copied().max().unwrap_or(0));
        // Same partition: pixels share a label exactly when imageproc's do.
        for i in 0..lab.len() {
            for j in (i + 1..lab.len()).step_by(7) {
                assert_eq!(lab[i] == lab[j], want.as_raw()[i] == want.as_raw()[j]);
            }
        }
    }

    #[test]
    fn blur_is_bit_identical_to_imageproc() {
        let mut rng = crate::synth::Rng::new(7);
        let img = RgbImage::from_fn(37, 23, |_, _| {
            image::Rgb([0, 0, 0].map(|_: u8| rng.below(256) as u8))
        });
        for sigma in [0.4, 1.0, 1.7, 2.0, 9.0] {
            assert_eq!(
                gaussian_blur(&img, sigma),
                imageproc::filter::gaussian_blur_f32(&img, sigma),
                "sigma {sigma}"
            );
        }
    }
}
