//! Seeded synthetic photos of coins on a table, with their true total: the test set
//! the accuracy tests and the benchmark use. Each seed picks a background (paper, wood,
//! cloth, stone), uneven and tinted light, a camera scale, mild perspective, coins with
//! relief, rims, copper or silver tones, shadows and contact shadows, touching
//! neighbours, then blur, sensor noise and JPEG compression, and sometimes an EXIF
//! rotation. Scenes are identifiable from the picture alone: any picture with coins
//! has a penny or two different silver denominations (one size of silver coin on its
//! own is as ambiguous to a person without a ruler as to the detector).

use image::RgbImage;

use crate::value::Denomination;

/// SplitMix64: tiny, deterministic across platforms and versions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.f() * n as f64) as usize % n.max(1)
    }
    pub fn normal(&mut self) -> f64 {
        let u = self.f().max(1e-12);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Smooth lattice noise in [-1, 1] (value noise with smoothstep).
#[derive(Debug, Clone)]
struct Noise(u64);

impl Noise {
    fn lattice(&self, x: i64, y: i64) -> f64 {
        let mut h = self.0
            ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        (h & 0xFFFF) as f64 / 32_767.5 - 1.0
    }
    fn at(&self, x: f64, y: f64) -> f64 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
        let (xi, yi) = (x0 as i64, y0 as i64);
        let a = self.lattice(xi, yi) * (1.0 - sx) + self.lattice(xi + 1, yi) * sx;
        let b = self.lattice(xi, yi + 1) * (1.0 - sx) + self.lattice(xi + 1, yi + 1) * sx;
        a * (1.0 - sy) + b * sy
    }
    fn fbm(&self, x: f64, y: f64, octaves: u32) -> f64 {
        let (mut s, mut amp, mut f, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for _ in 0..octaves {
            s += amp * self.at(x * f, y * f);
            norm += amp;
            amp *= 0.5;
            f *= 2.03;
        }
        s / norm
    }
}

/// Table surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    Paper,
    Wood,
    Cloth,
    Stone,
}

/// A coin in the scene, in image pixels of the displayed (upright) picture.
#[derive(Debug, Clone)]
pub struct TrueCoin {
    pub denomination: Denomination,
    pub x: f64,
    pub y: f64,
    pub diameter_px: f64,
}

/// One synthetic photo and its truth.
#[derive(Debug, Clone)]
pub struct Synth {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub coins: Vec<TrueCoin>,
    pub total_cents: i64,
    pub background: Background,
    /// EXIF orientation written (1 = none).
    pub exif_orientation: u16,
    pub touching_pairs: usize,
}

impl Synth {
    pub fn describe(&self) -> String {
        let mut counts: Vec<String> = Vec::new();
        for d in Denomination::ALL {
            let n = self.coins.iter().filter(|c| c.denomination == d).count();
            if n > 0 {
                counts.push(format!("{n}x{}", d.label()));
            }
        }
        format!(
            "{}x{} {:?} exif={} touching={} coins=[{}] total={}c",
            self.width,
            self.height,
            self.background,
            self.exif_orientation,
            self.touching_pairs,
            counts.join(" "),
            self.total_cents
        )
    }
}

struct Placed {
    den: Denomination,
    /// Table coordinates, mm.
    u: f64,
    v: f64,
    colour: [f64; 3],
    noise: Noise,
    relief: Vec<(f64, f64, f64, f64)>,
}

/// Maps table millimetres to image pixels: scale, squash (camera tilt) and a keystone.
struct Camera {
    s: f64,
    squash: f64,
    k: f64,
    w: f64,
    h: f64,
}

impl Camera {
    fn to_image(&self, u: f64, v: f64) -> (f64, f64) {
        let (x, y) = (self.s * u, self.s * self.squash * v);
        let w = 1.0 + self.k * y / (self.h / 2.0);
        (x / w + self.w / 2.0, y / w + self.h / 2.0)
    }
    fn to_table(&self, x: f64, y: f64) -> (f64, f64) {
        let (xp, yp) = (x - self.w / 2.0, y - self.h / 2.0);
        let y_ = yp / (1.0 - self.k * yp / (self.h / 2.0));
        let w = 1.0 + self.k * y_ / (self.h / 2.0);
        (xp * w / self.s, y_ / (self.s * self.squash))
    }
}

fn smoothstep(e0: f64, e1: f64, x: f64) -> f64 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn pick_denomination(rng: &mut Rng) -> Denomination {
    let r = rng.f() * 100.0;
    match r {
        r if r < 30.0 => Denomination::Penny,
        r if r < 50.0 => Denomination::Nickel,
        r if r < 74.0 => Denomination::Dime,
        r if r < 95.0 => Denomination::Quarter,
        r if r < 97.5 => Denomination::HalfDollar,
        _ => Denomination::Dollar,
    }
}

fn coin_colour(rng: &mut Rng, d: Denomination) -> [f64; 3] {
    match d {
        Denomination::Penny => {
            // From bright new copper to dark brown old pennies.
            let age = rng.f();
            let b = rng.range(0.85, 1.05) * (1.0 - 0.3 * age);
            [
                b * rng.range(0.72, 0.82),
                b * rng.range(0.40, 0.50),
                b * rng.range(0.24, 0.32),
            ]
        }
        Denomination::Dollar => {
            let b = rng.range(0.85, 1.0);
            [b * 0.78, b * 0.66, b * 0.38]
        }
        _ => {
            let b = rng.range(0.55, 0.8);
            [
                b * rng.range(0.98, 1.02),
                b * rng.range(0.98, 1.02),
                b * rng.range(0.99, 1.05),
            ]
        }
    }
}

/// The size the accuracy sets render `seed` at: in every block of 1000 seeds the first
/// 24 are landscape 1600 x 1200 and the rest portrait 1500 x 2000, both ~500 px when
/// worked on, as a 12 MP photo is.
pub fn set_size(seed: u64) -> (u32, u32) {
    if seed % 1000 < 24 {
        (1600, 1200)
    } else {
        (1500, 2000)
    }
}

/// Renders the photo of seed `seed` at `width` x `height` (before any EXIF rotation).
pub fn render(seed: u64, width: u32, height: u32) -> Synth {
    let mut rng = Rng::new(seed);
    let (wf, hf) = (f64::from(width), f64::from(height));
    let background = match rng.below(4) {
        0 => Background::Paper,
        1 => Background::Wood,
        2 => Background::Cloth,
        _ => Background::Stone,
    };
    let long = wf.max(hf);
    let cam = Camera {
        s: rng.range(0.045, 0.095) * long / Denomination::Quarter.diameter_mm(),
        squash: rng.range(0.9, 1.0),
        k: rng.range(-0.025, 0.025),
        w: wf,
        h: hf,
    };

    // Coins: how many, which, where.
    let n = match rng.below(20) {
        0 => 0,
        1..=5 => 2 + rng.below(3),
        6..=15 => 5 + rng.below(8),
        _ => 13 + rng.below(14),
    };
    let mut dens: Vec<Denomination> = (0..n).map(|_| pick_denomination(&mut rng)).collect();
    let identifiable = |d: &[Denomination]| {
        d.contains(&Denomination::Penny)
            || d.iter()
                .filter(|&&x| x != Denomination::Penny)
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= 2
    };
    if n > 0 && !identifiable(&dens) {
        dens[0] = Denomination::Penny;
    }
    let light_angle = rng.range(0.0, std::f64::consts::TAU);
    let mut placed: Vec<Placed> = Vec::new();
    let mut touching_pairs = 0;
    for den in dens {
        let r = den.diameter_mm() / 2.0;
        let margin_px = r * cam.s + 6.0;
        let mut ok = None;
        for _attempt in 0..400 {
            let (u, v, touch) = if !placed.is_empty() && rng.f() < 0.3 {
                let o = &placed[rng.below(placed.len())];
                let a = rng.range(0.0, std::f64::consts::TAU);
                let d = r + o.den.diameter_mm() / 2.0 + rng.range(0.0, 0.15);
                (o.u + d * a.cos(), o.v + d * a.sin(), true)
            } else {
                let x = rng.range(margin_px, wf - margin_px);
                let y = rng.range(margin_px, hf - margin_px);
                let (u, v) = cam.to_table(x, y);
                (u, v, false)
            };
            let (x, y) = cam.to_image(u, v);
            if x < margin_px || y < margin_px || x > wf - margin_px || y > hf - margin_px {
                continue;
            }
            let gap = if touch { -0.01 } else { 0.6 };
            if placed
                .iter()
                .all(|o| (o.u - u).hypot(o.v - v) >= r + o.den.diameter_mm() / 2.0 + gap)
            {
                ok = Some((u, v, touch));
                break;
            }
        }
        let Some((u, v, touch)) = ok else { continue };
        touching_pairs += usize::from(touch);
        let relief = (0..rng.below(5) + 2)
            .map(|_| {
                (
                    rng.range(-0.45, 0.45) * r,
                    rng.range(-0.45, 0.45) * r,
                    rng.range(0.1, 0.3) * r,
                    rng.range(-0.12, 0.12),
                )
            })
            .collect();
        placed.push(Placed {
            den,
            u,
            v,
            colour: coin_colour(&mut rng, den),
            noise: Noise(rng.next_u64()),
            relief,
        });
    }

    // Light: overall level, gradient, vignette, colour cast.
    let level = rng.range(0.75, 1.05);
    let (gx, gy) = (rng.range(-0.25, 0.25), rng.range(-0.25, 0.25));
    let vignette = rng.range(0.0, 0.35);
    let tint = [
        1.0 + rng.range(-0.06, 0.08),
        1.0,
        1.0 + rng.range(-0.08, 0.06),
    ];
    let light = |x: f64, y: f64| {
        let (u, v) = (2.0 * x / wf - 1.0, 2.0 * y / hf - 1.0);
        level * (1.0 + gx * u + gy * v) * (1.0 - vignette * 0.5 * (u * u + v * v))
    };

    // Background reflectance.
    let bg_noise = Noise(rng.next_u64());
    let bg_base: [f64; 3] = match background {
        Background::Paper => {
            let b = rng.range(0.82, 0.95);
            [b, b * rng.range(0.97, 1.0), b * rng.range(0.92, 0.99)]
        }
        Background::Wood => {
            let b = rng.range(0.4, 0.8);
            [b, b * rng.range(0.62, 0.72), b * rng.range(0.38, 0.48)]
        }
        Background::Cloth => [
            [0.16, 0.2, 0.36],
            [0.16, 0.36, 0.24],
            [0.35, 0.35, 0.36],
            [0.45, 0.14, 0.14],
            [0.08, 0.08, 0.09],
        ][rng.below(5)],
        Background::Stone => {
            let b = rng.range(0.35, 0.6);
            [b, b * 0.98, b * 1.02]
        }
    };
    let grain_dir = rng.range(0.0, std::f64::consts::PI);
    let grain_period = rng.range(1.5, 4.0);
    let shadow_len = rng.range(0.2, 1.6);
    let shadow_soft = rng.range(0.3, 2.5);
    let shadow_dark = rng.range(0.1, 0.45);
    let (shx, shy) = (
        -light_angle.cos() * shadow_len,
        -light_angle.sin() * shadow_len,
    );

    let (w, h) = (width as usize, height as usize);
    // Each coin's shadows reach this box of pixels; testing only the coins whose box holds
    // the pixel renders the same picture several times faster than testing every coin.
    let reach: Vec<[f64; 4]> = placed
        .iter()
        .map(|c| {
            let r = c.den.diameter_mm() / 2.0;
            let mm = (r + 3.0 * shadow_soft + 1.0 + shadow_len).max(r + 1.5);
            let px = mm * cam.s * 1.1 + 2.0;
            let (x, y) = cam.to_image(c.u, c.v);
            [x - px, x + px, y - px, y + px]
        })
        .collect();
    let mut buf = vec![0f32; w * h * 3];
    let mut near: Vec<usize> = Vec::new();
    for py in 0..h {
        let yc = py as f64 + 0.5;
        near.clear();
        near.extend((0..placed.len()).filter(|&i| (reach[i][2]..=reach[i][3]).contains(&yc)));
        for px in 0..w {
            let (x, y) = (px as f64 + 0.5, py as f64 + 0.5);
            let (u, v) = cam.to_table(x, y);
            let refl = match background {
                Background::Paper => {
                    let n = 1.0 + 0.03 * bg_noise.fbm(u / 25.0, v / 25.0, 3);
                    bg_base.map(|c| c * n)
                }
                Background::Wood => {
                    let t = u * grain_dir.cos() + v * grain_dir.sin();
                    let q = -u * grain_dir.sin() + v * grain_dir.cos();
                    let phase = t / grain_period * std::f64::consts::TAU
                        + 4.0 * bg_noise.fbm(q / 40.0, t / 80.0, 3);
                    let n = 1.0 + 0.1 * phase.sin() + 0.05 * bg_noise.fbm(t / 3.0, q / 30.0, 2);
                    bg_base.map(|c| c * n)
                }
                Background::Cloth => {
                    let weave = (u / 0.5 * std::f64::consts::PI).sin()
                        * (v / 0.5 * std::f64::consts::PI).sin();
                    let n = 1.0 + 0.08 * weave + 0.08 * bg_noise.fbm(u / 15.0, v / 15.0, 3);
                    bg_base.map(|c| c * n)
                }
                Background::Stone => {
                    let n = 1.0
                        + 0.12 * bg_noise.fbm(u / 2.0, v / 2.0, 4)
                        + 0.06 * bg_noise.fbm(u / 30.0, v / 30.0, 2);
                    bg_base.map(|c| c * n)
                }
            };
            let mut shade = 1.0;
            for c in near
                .iter()
                .filter(|&&i| (reach[i][0]..=reach[i][1]).contains(&x))
                .map(|&i| &placed[i])
            {
                let r = c.den.diameter_mm() / 2.0;
                let d_sh = (u - c.u - shx).hypot(v - c.v - shy) - r;
                if d_sh < 3.0 * shadow_soft + 1.0 {
                    shade *=
                        1.0 - shadow_dark * (1.0 - smoothstep(-shadow_soft, shadow_soft, d_sh));
                }
                // Contact shadow just around the rim.
                let d = (u - c.u).hypot(v - c.v) - r;
                if (0.0..1.5).contains(&d) {
                    shade *= 1.0 - 0.25 * (-d / 0.35).exp();
                }
            }
            let l = light(x, y) * shade;
            let i = (py * w + px) * 3;
            for k in 0..3 {
                buf[i + k] = (refl[k] * l * tint[k] * 255.0) as f32;
            }
        }
    }

    // Coins, each over its own bounding box with antialiased edges.
    let mut coins = Vec::new();
    for c in &placed {
        let r = c.den.diameter_mm() / 2.0;
        let (cx, cy) = cam.to_image(c.u, c.v);
        let rp = r * cam.s * 1.1 + 3.0;
        let (x0, x1) = ((cx - rp).max(0.0) as usize, ((cx + rp) as usize).min(w - 1));
        let (y0, y1) = ((cy - rp).max(0.0) as usize, ((cy + rp) as usize).min(h - 1));
        let px_mm = 1.0 / cam.s;
        for py in y0..=y1 {
            for px in x0..=x1 {
                let (x, y) = (px as f64 + 0.5, py as f64 + 0.5);
                let (u, v) = cam.to_table(x, y);
                let (du, dv) = (u - c.u, v - c.v);
                let rho = du.hypot(dv);
                let alpha = ((r - rho) / px_mm + 0.5).clamp(0.0, 1.0);
                if alpha <= 0.0 {
                    continue;
                }
                let q = rho / r;
                let mut b = 1.0 + 0.08 * c.noise.fbm(du / 1.2, dv / 1.2, 3);
                for &(ru, rv, rr, amp) in &c.relief {
                    let d = (du - ru).hypot(dv - rv);
                    b += amp * (1.0 - smoothstep(rr * 0.7, rr, d));
                }
                b += 0.12 * (smoothstep(0.84, 0.88, q) - smoothstep(0.93, 0.96, q));
                b -= 0.2 * smoothstep(0.96, 1.0, q);
                let ang = dv.atan2(du);
                b *= 1.0 + 0.12 * q * (ang - light_angle).cos();
                let l = light(x, y) * b;
                let i = (py * w + px) * 3;
                for k in 0..3 {
                    let coin = (c.colour[k] * l * tint[k] * 255.0) as f32;
                    buf[i + k] = buf[i + k] * (1.0 - alpha as f32) + coin * alpha as f32;
                }
            }
        }
        // The true diameter as the detector should see it: mean of the projected axes.
        let (ax, _) = cam.to_image(c.u + r, c.v);
        let (bx, _) = cam.to_image(c.u - r, c.v);
        let (_, ay) = cam.to_image(c.u, c.v + r);
        let (_, by) = cam.to_image(c.u, c.v - r);
        coins.push(TrueCoin {
            denomination: c.den,
            x: cx,
            y: cy,
            diameter_px: ((ax - bx).abs() + (ay - by).abs()) / 2.0,
        });
    }

    // Camera: blur, noise, 8 bits.
    let noise_sigma = rng.range(1.5, 5.0);
    let blur = rng.range(0.4, 1.4) as f32;
    let mut img = RgbImage::new(width, height);
    for (i, p) in img.as_mut().iter_mut().enumerate() {
        *p = buf[i].clamp(0.0, 255.0) as u8;
    }
    let img = crate::detect::gaussian_blur(&img, blur);
    let mut img = img;
    for p in img.as_mut().iter_mut() {
        *p = (f64::from(*p) + noise_sigma * rng.normal())
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    let quality = 70 + rng.below(25) as u8;
    // Some pictures are stored sideways with an EXIF tag saying how to show them.
    let exif_orientation: u16 = match rng.below(6) {
        0 => 6,
        1 => 8,
        2 => 3,
        _ => 1,
    };
    let stored = match exif_orientation {
        6 => image::imageops::rotate270(&img),
        8 => image::imageops::rotate90(&img),
        3 => image::imageops::rotate180(&img),
        _ => img,
    };
    let jpeg = encode_jpeg(&stored, quality, exif_orientation);
    let total_cents = coins
        .iter()
        .map(|c| i64::from(c.denomination.cents()))
        .sum();
    Synth {
        jpeg,
        width,
        height,
        coins,
        total_cents,
        background,
        exif_orientation,
        touching_pairs,
    }
}

/// A big-endian TIFF block with one IFD entry: the orientation tag.
fn exif_orientation_block(o: u16) -> Vec<u8> {
    let mut v = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&0x0112u16.to_be_bytes());
    v.extend_from_slice(&3u16.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&o.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

/// JPEG-encodes `img`, with an EXIF orientation tag unless it is 1.
pub fn encode_jpeg(img: &RgbImage, quality: u8, orientation: u16) -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    if orientation != 1 {
        let _ = enc.set_exif_metadata(exif_orientation_block(orientation));
    }
    // Encoding to memory cannot fail for an RGB picture.
    let _ = enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    );
    out
}
