//! The second cue: circles found by their edges alone, for coins whose colour matches the
//! table (silver on grey stone) and so never enter the colour mask. Every edge pixel votes
//! along its gradient for the centres it could belong to (the gradient Hough transform);
//! a peak becomes a seed only if edges pointing at it cover most of a circle around it,
//! which grain, weave and speckle do not, and a circle refined from it counts only if
//! its rim stands well clear of the table's texture (`Edges::rim_contrast`).

use super::Planes;

/// Angular sectors a circle's edge coverage is counted in.
const SECTORS: usize = 48;

/// Share of a circle's sectors (those inside the picture) that radial edges must cover.
const MIN_COVERAGE: f64 = 0.5;

/// How closely an edge's gradient must point along the radius to count for a circle.
const MIN_RADIAL_COS: f32 = 0.92;

/// Most peaks examined: the rest are texture.
const MAX_PEAKS: usize = 48;

/// Edge map of the picture's lightness: gradient magnitude per pixel and the thinned
/// edge pixels with their gradients.
pub(super) struct Edges {
    w: usize,
    h: usize,
    mag: Vec<f32>,
    /// Edge pixels (index, gx, gy) in index order, so a row's run is found by search.
    list: Vec<(u32, f32, f32)>,
    /// Median gradient outside the skipped discs: the table's texture.
    texture: f32,
}

impl Edges {
    /// Sobel gradients of lightness, kept where they are a local maximum across the edge
    /// and stronger than `k` times the picture's median gradient (its texture), outside
    /// the discs in `skip`.
    pub(super) fn new(p: &Planes, skip: &[(f64, f64, f64)], k: f32) -> Self {
        let (w, h) = (p.w, p.h);
        let mut mag = vec![0f32; w * h];
        // Sobel on lightness, from three rolling rows of it: smooth or difference
        // across each row, then combine the rows above and below.
        let light = |y: usize, out: &mut [f32]| {
            let (r, g, b) = (
                &p.c[0][y * w..(y + 1) * w],
                &p.c[1][y * w..(y + 1) * w],
                &p.c[2][y * w..(y + 1) * w],
            );
            for (((o, r), g), b) in out.iter_mut().zip(r).zip(g).zip(b) {
                *o = r + g + b;
            }
        };
        let across = |l: &[f32], sm: &mut [f32], df: &mut [f32]| {
            for x in 1..w - 1 {
                sm[x] = l[x - 1] + 2.0 * l[x] + l[x + 1];
                df[x] = l[x + 1] - l[x - 1];
            }
        };
        let mut l = vec![0f32; w];
        let mut rows: [(Vec<f32>, Vec<f32>); 3] =
            std::array::from_fn(|_| (vec![0f32; w], vec![0f32; w]));
        for y in 0..h {
            rows.rotate_left(1);
            light(y, &mut l);
            let (sm, df) = &mut rows[2];
            across(&l, sm, df);
            if y < 2 {
                continue;
            }
            let (up, mid, dn) = (&rows[0], &rows[1], &rows[2]);
            let o = (y - 1) * w;
            for x in 1..w - 1 {
                let a = up.1[x] + 2.0 * mid.1[x] + dn.1[x];
                let b = dn.0[x] - up.0[x];
                mag[o + x] = (a * a + b * b).sqrt();
            }
        }
        let mut blocked = vec![false; w * h];
        for &(cx, cy, r) in skip {
            let rr = 1.25 * r + 2.0;
            let (y0, y1) = ((cy - rr).max(0.0) as usize, ((cy + rr) as usize).min(h - 1));
            let (x0, x1) = ((cx - rr).max(0.0) as usize, ((cx + rr) as usize).min(w - 1));
            for y in y0..=y1 {
                let dy2 = (y as f64 - cy).powi(2);
                for x in x0..=x1 {
                    if (x as f64 - cx).powi(2) + dy2 <= rr * rr {
                        blocked[y * w + x] = true;
                    }
                }
            }
        }
        let mut sample: Vec<f32> = mag
            .iter()
            .zip(&blocked)
            .step_by(3)
            .filter(|(_, b)| !**b)
            .map(|(m, _)| *m)
            .collect();
        let texture = super::median(&mut sample);
        let t = (k * texture).max(12.0);
        // The gradient again, for the few pixels strong enough to be edges.
        let l = |i: usize| p.c[0][i] + p.c[1][i] + p.c[2][i];
        let grad = |i: usize| {
            let (a, b, c) = (l(i - w - 1), l(i - w), l(i - w + 1));
            let (d, f) = (l(i - 1), l(i + 1));
            let (g, hh, j) = (l(i + w - 1), l(i + w), l(i + w + 1));
            (
                (c + 2.0 * f + j) - (a + 2.0 * d + g),
                (g + 2.0 * hh + j) - (a + 2.0 * b + c),
            )
        };
        let mut list = Vec::new();
        for y in 2..h - 2 {
            for x in 2..w - 2 {
                let i = y * w + x;
                let m = mag[i];
                if m < t || blocked[i] {
                    continue;
                }
                let (gx, gy) = grad(i);
                // Non-maximum suppression across the edge, on the nearest of 4 directions.
                let (ax, ay) = (gx.abs(), gy.abs());
                let step: isize = if ax > 2.414 * ay {
                    1
                } else if ay > 2.414 * ax {
                    w as isize
                } else if (gx > 0.0) == (gy > 0.0) {
                    w as isize + 1
                } else {
                    w as isize - 1
                };
                let (a, b) = (
                    mag[(i as isize - step) as usize],
                    mag[(i as isize + step) as usize],
                );
                if m >= a && m > b {
                    list.push((i as u32, gx, gy));
                }
            }
        }
        Self {
            w,
            h,
            mag,
            list,
            texture,
        }
    }

    /// How much stronger than the table's texture the gradient is along the circle
    /// (the strongest within a pixel and a half of it, averaged around): a coin's rim
    /// is a clear line, a blob of texture that happens to be round is not.
    pub(super) fn rim_contrast(&self, cx: f64, cy: f64, r: f64) -> f64 {
        let (mut sum, mut n) = (0f64, 0u32);
        for s in 0..SECTORS {
            let a = (s as f64 + 0.5) / SECTORS as f64 * std::f64::consts::TAU;
            let (dx, dy) = (a.cos(), a.sin());
            let mut best = None;
            for k in -2..=2 {
                let t = r + 0.75 * f64::from(k);
                let (x, y) = ((cx + t * dx).round(), (cy + t * dy).round());
                if x < 1.0 || y < 1.0 || x > (self.w - 2) as f64 || y > (self.h - 2) as f64 {
                    continue;
                }
                let m = self.mag[y as usize * self.w + x as usize];
                best = Some(best.map_or(m, |b: f32| b.max(m)));
            }
            if let Some(b) = best {
                sum += f64::from(b);
                n += 1;
            }
        }
        if n == 0 {
            return 0.0;
        }
        sum / f64::from(n) / f64::from(self.texture.max(1.0))
    }

    /// The edges of row `y` between columns `x0` and `x1` (inclusive).
    fn row(&self, y: usize, x0: usize, x1: usize) -> &[(u32, f32, f32)] {
        let (a, b) = ((y * self.w + x0) as u32, (y * self.w + x1) as u32);
        let lo = self.list.partition_point(|e| e.0 < a);
        let hi = self.list.partition_point(|e| e.0 <= b);
        &self.list[lo..hi]
    }
}

/// Seeds (x, y, r) of circles of radius `r_lo..=r_hi` that the edges support and that lie
/// clear of the circles already found (`found`, as (x, y, r)).
pub(super) fn seeds(
    e: &Edges,
    found: &[(f64, f64, f64)],
    r_lo: f64,
    r_hi: f64,
) -> Vec<(f64, f64, f64)> {
    let (w, h) = (e.w, e.h);
    if w < 8 || h < 8 || r_hi < r_lo {
        return Vec::new();
    }
    // Votes along both directions of every edge's gradient: the face may be brighter or
    // darker than the table, and a rim line has an edge on each side.
    let mut acc = vec![0u16; w * h];
    let (lo, hi) = (r_lo.floor() as usize, r_hi.ceil() as usize);
    for &(i, gx, gy) in &e.list {
        let (x, y) = ((i as usize % w) as f32, (i as usize / w) as f32);
        let m = (gx * gx + gy * gy).sqrt();
        let (dx, dy) = (gx / m, gy / m);
        for s in [-1f32, 1.0] {
            for r in lo..=hi {
                let (vx, vy) = (x + s * r as f32 * dx, y + s * r as f32 * dy);
                if vx < 0.0 || vy < 0.0 {
                    break;
                }
                let (vx, vy) = ((vx + 0.5) as usize, (vy + 0.5) as usize);
                if vx >= w || vy >= h {
                    break;
                }
                let v = &mut acc[vy * w + vx];
                *v = v.saturating_add(1);
            }
        }
    }
    // 3 x 3 sums, so a centre spread over neighbouring pixels counts whole.
    let mut sum = vec![0u16; w * h];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut s = 0u16;
            for dy in 0..3 {
                let r = (y + dy - 1) * w + x - 1;
                s = s
                    .saturating_add(acc[r])
                    .saturating_add(acc[r + 1])
                    .saturating_add(acc[r + 2]);
            }
            sum[y * w + x] = s;
        }
    }
    let mut peaks: Vec<(u16, usize, usize)> = Vec::new();
    for y in 2..h - 2 {
        for x in 2..w - 2 {
            let s = sum[y * w + x];
            if s < 8 {
                continue;
            }
            let mut is_max = true;
            'n: for dy in 0..5 {
                for dx in 0..5 {
                    let j = (y + dy - 2) * w + x + dx - 2;
                    if sum[j] > s || (sum[j] == s && j < y * w + x) {
                        is_max = false;
                        break 'n;
                    }
                }
            }
            if is_max {
                peaks.push((s, x, y));
            }
        }
    }
    peaks.sort_by_key(|p| std::cmp::Reverse(p.0));
    peaks.truncate(MAX_PEAKS);
    let mut out: Vec<(f64, f64, f64)> = Vec::new();
    for (_, x, y) in peaks {
        let (cx, cy) = (x as f64, y as f64);
        let clear = |o: &(f64, f64, f64)| (o.0 - cx).hypot(o.1 - cy) > 0.8 * o.2;
        if !found.iter().chain(&out).all(clear) {
            continue;
        }
        if let Some(r) = best_radius(e, (cx, cy), lo, hi) {
            out.push((cx, cy, r));
        }
    }
    out
}

/// The radius around (cx, cy) whose circle radial edges cover best, if they cover enough.
fn best_radius(e: &Edges, (cx, cy): (f64, f64), lo: usize, hi: usize) -> Option<f64> {
    let (w, h) = (e.w, e.h);
    // Sector bits per whole-pixel radius.
    let mut bits = vec![0u64; hi + 3];
    let (x0, x1) = (
        (cx - hi as f64 - 2.0).max(0.0) as usize,
        ((cx + hi as f64 + 2.0) as usize).min(w - 1),
    );
    let (y0, y1) = (
        (cy - hi as f64 - 2.0).max(0.0) as usize,
        ((cy + hi as f64 + 2.0) as usize).min(h - 1),
    );
    for y in y0..=y1 {
        for &(i, gx, gy) in e.row(y, x0, x1) {
            let x = i as usize % w;
            let (rx, ry) = (x as f64 - cx, y as f64 - cy);
            let d = (rx * rx + ry * ry).sqrt();
            if d < lo as f64 - 1.0 || d > hi as f64 + 1.0 || d < 1.0 {
                continue;
            }
            let m = f64::from((gx * gx + gy * gy).sqrt());
            let cos = ((f64::from(gx) * rx + f64::from(gy) * ry) / (m * d)).abs();
            if cos < f64::from(MIN_RADIAL_COS) {
                continue;
            }
            let a = ry.atan2(rx).rem_euclid(std::f64::consts::TAU);
            let s = ((a / std::f64::consts::TAU * SECTORS as f64) as usize).min(SECTORS - 1);
            bits[d.round() as usize] |= 1 << s;
        }
    }
    let dirs: [(f64, f64); SECTORS] = std::array::from_fn(|s| {
        let a = (s as f64 + 0.5) / SECTORS as f64 * std::f64::consts::TAU;
        (a.cos(), a.sin())
    });
    let mut best: Option<(f64, f64)> = None;
    for r in lo.max(2)..=hi {
        let covered = bits[r - 1] | bits[r] | bits[r + 1];
        let rf = r as f64;
        // Sectors whose arc leaves the picture cannot be covered and do not count.
        let clipped =
            cx < rf + 1.0 || cy < rf + 1.0 || cx + rf > (w - 2) as f64 || cy + rf > (h - 2) as f64;
        let mut inside_bits = u64::MAX >> (64 - SECTORS);
        if clipped {
            for (s, &(dx, dy)) in dirs.iter().enumerate() {
                let (px, py) = (cx + rf * dx, cy + rf * dy);
                if px < 1.0 || py < 1.0 || px > (w - 2) as f64 || py > (h - 2) as f64 {
                    inside_bits &= !(1 << s);
                }
            }
        }
        let inside = inside_bits.count_ones();
        let hit = (covered & inside_bits).count_ones();
        if (inside as usize) < SECTORS / 2 {
            continue;
        }
        let c = f64::from(hit) / f64::from(inside);
        if best.is_none_or(|(bc, _)| c > bc) {
            best = Some((c, r as f64));
        }
    }
    best.filter(|b| b.0 >= MIN_COVERAGE).map(|b| b.1)
}

#[cfg(test)]
mod tests {
    use crate::detect::{DetectParams, detect};
    use image::{Rgb, RgbImage};

    /// Grey speckle (the table) with, optionally, a disc of the same mean grey at
    /// (100, 80) with radius 22 whose only mark is a dark rim line two pixels wide.
    fn speckle(disc: bool) -> RgbImage {
        let mut rng = crate::synth::Rng::new(11);
        RgbImage::from_fn(240, 180, |x, y| {
            let d = (f64::from(x) - 100.0).hypot(f64::from(y) - 80.0);
            let base = if disc && (20.0..22.0).contains(&d) {
                70.0
            } else {
                128.0
            };
            let v = (base + rng.range(-30.0, 30.0)).clamp(0.0, 255.0) as u8;
            Rgb([v, v, v])
        })
    }

    #[test]
    fn finds_a_coin_the_colour_of_the_table_by_its_rim() {
        let found = detect(&speckle(true), &DetectParams::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let c = &found[0];
        assert!(
            (c.x - 100.0).abs() < 1.5 && (c.y - 80.0).abs() < 1.5,
            "{c:?}"
        );
        assert!((19.0..23.0).contains(&c.r), "{c:?}");
    }

    #[test]
    fn speckle_alone_holds_no_coin() {
        let found = detect(&speckle(false), &DetectParams::default());
        assert!(found.is_empty(), "{found:?}");
    }
}
