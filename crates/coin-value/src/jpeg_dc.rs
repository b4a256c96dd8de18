//! A baseline JPEG decoded to one pixel per 8 x 8 block, from the DC terms alone: the
//! picture at 1/8 scale, which is all the detector needs of a 12 MP photo. Every AC
//! coefficient must still be entropy-decoded to find where the next block starts, but
//! it is only skipped, never stored, dequantised or transformed, so this costs a
//! fraction of `jpeg_decoder`'s 1/8-scale decode (which keeps every coefficient).
//! Anything else (progressive, arithmetic, 12-bit, CMYK, non-interleaved scans) answers
//! `None` and the caller falls back to `jpeg_decoder`, which also words the errors.

use image::RgbImage;

/// A Huffman table: codes of up to `FAST` bits by lookup, longer ones canonically.
struct Huffman {
    /// (code length, symbol) indexed by the next FAST bits; length 0 means longer.
    fast: Vec<(u8, u8)>,
    /// For AC tables: (bits to skip, coefficients to advance) for a whole coefficient,
    /// code and extra bits together, indexed like `fast`; 0 bits means the slow path.
    /// The extra bits' value is never needed, only how many there are.
    skip: Box<[(u8, u8); 1 << FAST]>,
    /// Largest code of each length (1..=16), -1 when there is none.
    maxcode: [i32; 18],
    /// Index into `symbols` of each length's first code, minus that code.
    delta: [i32; 17],
    symbols: Vec<u8>,
}

const FAST: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Option<Self> {
        let mut fast = vec![(0u8, 0u8); 1 << FAST];
        let mut maxcode = [-1i32; 18];
        let mut delta = [0i32; 17];
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            delta[len] = k as i32 - code;
            for _ in 0..n {
                // A code that does not fit its length means a corrupt table.
                if code >= 1 << len {
                    return None;
                }
                let sym = *symbols.get(k)?;
                if len as u32 <= FAST {
                    let shift = FAST - len as u32;
                    let first = (code as usize) << shift;
                    for e in &mut fast[first..first + (1 << shift)] {
                        *e = (len as u8, sym);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                maxcode[len] = code - 1;
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        let mut skip = Box::new([(0u8, 0u8); 1 << FAST]);
        for (e, &(len, rs)) in skip.iter_mut().zip(&fast) {
            *e = {
                let (r, s) = (rs >> 4, rs & 15);
                match (len, r, s) {
                    (0, _, _) => (0, 0),
                    (_, 0, 0) => (len, 64),
                    (_, 15, 0) => (len, 16),
                    (_, _, 0) => (0, 0),
                    _ => (len + s, r + 1),
                }
            };
        }
        Some(Self {
            fast,
            skip,
            maxcode,
            delta,
            symbols,
        })
    }
}

/// MSB-first bits of entropy-coded data, with 0xFF00 unstuffed; at a marker it feeds
/// zeros and remembers where the marker is.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    n: u32,
    /// Zero bits fed past the end of the segment; many means the data is corrupt.
    overrun: u32,
}

impl<'a> Bits<'a> {
    fn refill(&mut self) {
        while self.n <= 56 {
            let mut byte = 0u8;
            match self.data.get(self.pos) {
                Some(&0xFF) => {
                    if self.data.get(self.pos + 1) == Some(&0x00) {
                        byte = 0xFF;
                        self.pos += 2;
                    } else {
                        self.overrun += 8;
                    }
                }
                Some(&b) => {
                    byte = b;
                    self.pos += 1;
                }
                None => self.overrun += 8,
            }
            self.buf |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
    }

    #[inline(always)]
    fn take(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        if self.n < k {
            self.refill();
        }
        let v = (self.buf >> (64 - k)) as u32;
        self.buf <<= k;
        self.n -= k;
        v
    }

    #[inline(always)]
    fn symbol(&mut self, h: &Huffman) -> Option<u8> {
        if self.n < 16 {
            self.refill();
        }
        let (len, sym) = h.fast[(self.buf >> (64 - FAST)) as usize];
        if len > 0 {
            self.buf <<= len;
            self.n -= u32::from(len);
            return Some(sym);
        }
        let mut len = FAST as usize + 1;
        let mut code = (self.buf >> (64 - len)) as i32;
        while code > h.maxcode[len] {
            len += 1;
            if len > 16 {
                return None;
            }
            code = (self.buf >> (64 - len)) as i32;
        }
        self.buf <<= len;
        self.n -= len as u32;
        h.symbols.get((code + h.delta[len]) as usize).copied()
    }

    /// Drops buffered bits and steps over an RSTn marker.
    fn restart(&mut self) -> Option<()> {
        self.buf = 0;
        self.n = 0;
        self.overrun = 0;
        while self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
            (Some(0xFF), Some(m)) if (0xD0..=0xD7).contains(m) => {
                self.pos += 2;
                Some(())
            }
            _ => None,
        }
    }
}

/// Steps over one block's AC coefficients. Its own function, small enough that the bit
/// buffer and the coefficient index stay in registers: this loop is the decode's cost.
#[inline(never)]
fn skip_ac(bits: &mut Bits, table: &Huffman) -> Option<()> {
    let (mut buf, mut n) = (bits.buf, bits.n);
    let mut k = 1usize;
    while k < 64 {
        if n < 32 {
            (bits.buf, bits.n) = (buf, n);
            bits.refill();
            (buf, n) = (bits.buf, bits.n);
        }
        let (t, adv) = table.skip[(buf >> (64 - FAST)) as usize];
        if t > 0 {
            buf <<= t;
            n -= u32::from(t);
            k += usize::from(adv);
            continue;
        }
        (bits.buf, bits.n) = (buf, n);
        let rs = bits.symbol(table)?;
        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        bits.take(s);
        (buf, n) = (bits.buf, bits.n);
        if s == 0 {
            if r != 15 {
                break;
            }
            k += 16;
            continue;
        }
        k += r + 1;
    }
    (bits.buf, bits.n) = (buf, n);
    Some(())
}

fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < 1 << (s - 1) {
        v as i32 - (1 << s) + 1
    } else {
        v as i32
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    td: usize,
    ta: usize,
}

fn be16(d: &[u8], i: usize) -> Option<usize> {
    Some(usize::from(*d.get(i)?) << 8 | usize::from(*d.get(i + 1)?))
}

/// The 1/8-scale picture of a baseline JPEG, `ceil(width / 8)` x `ceil(height / 8)`,
/// or `None` when this decoder does not handle the file.
pub fn decode(d: &[u8]) -> Option<RgbImage> {
    if d.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    let mut quant_dc = [0u16; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut comps: Vec<Component> = Vec::new();
    let (mut width, mut height, mut restart) = (0usize, 0usize, 0usize);
    let mut adobe_rgb = false;
    loop {
        // Markers may be padded with any number of 0xFF.
        while *d.get(pos)? == 0xFF && *d.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        if *d.get(pos)? != 0xFF {
            return None;
        }
        let marker = *d.get(pos + 1)?;
        pos += 2;
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue;
        }
        let len = be16(d, pos)?;
        let seg = d.get(pos + 2..pos + len)?;
        match marker {
            0xDB => {
                let mut i = 0;
                while i < seg.len() {
                    let (pq, tq) = (seg[i] >> 4, usize::from(seg[i] & 15));
                    *quant_dc.get_mut(tq)? = if pq == 0 {
                        u16::from(*seg.get(i + 1)?)
                    } else {
                        be16(seg, i + 1)? as u16
                    };
                    i += 1 + 64 * (usize::from(pq) + 1);
                }
            }
            0xC4 => {
                let mut i = 0;
                while i < seg.len() {
                    let (tc, th) = (seg[i] >> 4, usize::from(seg[i] & 15));
                    let counts: [u8; 16] = seg.get(i + 1..i + 17)?.try_into().ok()?;
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = seg.get(i + 17..i + 17 + n)?.to_vec();
                    let table = Huffman::new(&counts, symbols)?;
                    match tc {
                        0 => *dc_tables.get_mut(th)? = Some(table),
                        1 => *ac_tables.get_mut(th)? = Some(table),
                        _ => return None,
                    }
                    i += 17 + n;
                }
            }
            // Baseline and extended sequential Huffman, 8-bit only.
            0xC0 | 0xC1 => {
                if *seg.first()? != 8 {
                    return None;
                }
                height = be16(seg, 1)?;
                width = be16(seg, 3)?;
                let nf = usize::from(*seg.get(5)?);
                for k in 0..nf {
                    let c = seg.get(6 + 3 * k..9 + 3 * k)?;
                    comps.push(Component {
                        id: c[0],
                        h: usize::from(c[1] >> 4),
                        v: usize::from(c[1] & 15),
                        tq: usize::from(c[2] & 3),
                        td: 0,
                        ta: 0,
                    });
                }
            }
            // Progressive, lossless, hierarchical, arithmetic: not here.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xDD => restart = be16(seg, 0)?,
            // Adobe's marker: a transform of 0 means the channels are RGB or CMYK.
            0xEE => adobe_rgb = seg.starts_with(b"Adobe") && seg.get(11) == Some(&0),
            0xDA => {
                let ns = usize::from(*seg.first()?);
                if ns != comps.len() || ns == 0 {
                    return None;
                }
                for k in 0..ns {
                    let (id, t) = (*seg.get(1 + 2 * k)?, *seg.get(2 + 2 * k)?);
                    let c = comps.iter_mut().find(|c| c.id == id)?;
                    c.td = usize::from(t >> 4) & 3;
                    c.ta = usize::from(t & 15) & 3;
                }
                pos += len;
                break;
            }
            0xD9 => return None,
            _ => {}
        }
        pos += len;
    }
    let nf = comps.len();
    // The caller checked the size against its limits; this bounds direct callers too.
    if !(nf == 1 || nf == 3) || adobe_rgb || width == 0 || height == 0 || width * height > 1 << 28 {
        return None;
    }
    if nf == 3 && comps.iter().map(|c| c.id).eq([b'R', b'G', b'B']) {
        return None;
    }
    if comps
        .iter()
        .any(|c| !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v))
    {
        return None;
    }
    // A single-component scan is not interleaved: one block per MCU.
    if nf == 1 {
        comps[0].h = 1;
        comps[0].v = 1;
    }
    let hmax = comps.iter().map(|c| c.h).max()?;
    let vmax = comps.iter().map(|c| c.v).max()?;
    let (mcux, mcuy) = (width.div_ceil(8 * hmax), height.div_ceil(8 * vmax));
    let mut planes: Vec<Vec<i32>> = comps
        .iter()
        .map(|c| vec![0i32; mcux * c.h * mcuy * c.v])
        .collect();
    let dc: Vec<&Huffman> = comps
        .iter()
        .map(|c| dc_tables[c.td].as_ref())
        .collect::<Option<_>>()?;
    let ac: Vec<&Huffman> = comps
        .iter()
        .map(|c| ac_tables[c.ta].as_ref())
        .collect::<Option<_>>()?;
    let mut bits = Bits {
        data: d,
        pos,
        buf: 0,
        n: 0,
        overrun: 0,
    };
    let mut pred = vec![0i32; nf];
    let mut left = restart;
    for my in 0..mcuy {
        for mx in 0..mcux {
            if restart > 0 {
                if left == 0 {
                    bits.restart()?;
                    pred.fill(0);
                    left = restart;
                }
                left -= 1;
            }
            for (ci, c) in comps.iter().enumerate() {
                let stride = mcux * c.h;
                for by in 0..c.v {
                    for bx in 0..c.h {
                        let s = u32::from(bits.symbol(dc[ci])?);
                        if s > 11 {
                            return None;
                        }
                        pred[ci] += extend(bits.take(s), s);
                        planes[ci][(my * c.v + by) * stride + mx * c.h + bx] = pred[ci];
                        skip_ac(&mut bits, ac[ci])?;
                    }
                }
            }
            // Zeros fed past the segment's end sit behind every real bit in the buffer;
            // reading more than a few of them means the data is truncated or corrupt:
            // let jpeg_decoder say which.
            if bits.overrun.saturating_sub(bits.n) > 16 {
                return None;
            }
        }
    }
    // DC / 8 is the block's mean; the level shift brings it back to 0..255.
    let levels: Vec<Vec<f32>> = planes
        .iter()
        .zip(&comps)
        .map(|(p, c)| {
            let q = f32::from(quant_dc[c.tq]) / 8.0;
            p.iter().map(|&v| v as f32 * q + 128.0).collect()
        })
        .collect();
    let (ow, oh) = (width.div_ceil(8), height.div_ceil(8));
    let mut out = vec![0u8; ow * oh * 3];
    let luma = &levels[0];
    let lstride = mcux * comps[0].h;
    if nf == 1 {
        for y in 0..oh {
            for x in 0..ow {
                let v = luma[y * lstride + x].round().clamp(0.0, 255.0) as u8;
                out[(y * ow + x) * 3..(y * ow + x) * 3 + 3].fill(v);
            }
        }
        return RgbImage::from_raw(ow as u32, oh as u32, out);
    }
    // Chroma sampled at its own block grid, bilinearly at each luma block's centre;
    // the taps depend only on the column or only on the row, so they are worked out once.
    let taps = |n: usize, f: f32, len: usize| -> Vec<(usize, usize, f32)> {
        (0..n)
            .map(|i| {
                let s = ((i as f32 + 0.5) * f - 0.5).clamp(0.0, (len - 1) as f32);
                let i0 = s as usize;
                (i0, (i0 + 1).min(len - 1), s - i0 as f32)
            })
            .collect()
    };
    let up: Vec<Vec<f32>> = (1..3)
        .map(|ci| {
            let c = &comps[ci];
            let (cw, ch) = (mcux * c.h, mcuy * c.v);
            let xs = taps(ow, c.h as f32 / comps[0].h as f32, cw);
            let ys = taps(oh, c.v as f32 / comps[0].v as f32, ch);
            let p = &levels[ci];
            let mut out = vec![0f32; ow * oh];
            let mut row = vec![0f32; ow];
            let mut rows = [vec![0f32; ow], vec![0f32; ow]];
            for (y, &(y0, y1, ay)) in ys.iter().enumerate() {
                for (r, sy) in rows.iter_mut().zip([y0, y1]) {
                    let src = &p[sy * cw..(sy + 1) * cw];
                    for (o, &(x0, x1, ax)) in r.iter_mut().zip(&xs) {
                        *o = src[x0] + (src[x1] - src[x0]) * ax;
                    }
                }
                for ((o, &a), &b) in row.iter_mut().zip(&rows[0]).zip(&rows[1]) {
                    *o = a + (b - a) * ay;
                }
                out[y * ow..(y + 1) * ow].copy_from_slice(&row);
            }
            out
        })
        .collect();
    for y in 0..oh {
        let lrow = &luma[y * lstride..y * lstride + ow];
        let (cbr, crr) = (&up[0][y * ow..(y + 1) * ow], &up[1][y * ow..(y + 1) * ow]);
        let orow = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (((o, &yv), &cb), &cr) in orow.chunks_exact_mut(3).zip(lrow).zip(cbr).zip(crr) {
            let (cb, cr) = (cb - 128.0, cr - 128.0);
            let rgb = [
                yv + 1.402 * cr,
                yv - 0.344_136 * cb - 0.714_136 * cr,
                yv + 1.772 * cb,
            ];
            for (o, v) in o.iter_mut().zip(rgb) {
                *o = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same picture as `jpeg_decoder` at 1/8 scale, up to rounding and the way the
    /// chroma is interpolated.
    #[test]
    fn matches_jpeg_decoder_at_one_eighth() {
        for (seed, w, h) in [(1u64, 800, 600), (5, 1000, 750), (30, 604, 803)] {
            let photo = crate::synth::render(seed, w, h);
            let ours = decode(&photo.jpeg).expect("a baseline JPEG");
            let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(&photo.jpeg));
            dec.read_info().expect("header");
            let info = dec.info().expect("info");
            let (sw, sh) = dec
                .scale(info.width.div_ceil(8), info.height.div_ceil(8))
                .expect("scale");
            let theirs = dec.decode().expect("decode");
            assert_eq!(
                (ours.width(), ours.height()),
                (u32::from(sw), u32::from(sh))
            );
            let diffs: Vec<i32> = ours
                .as_raw()
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            assert!(mean < 1.5, "seed {seed}: mean difference {mean}");
        }
    }

    #[test]
    fn declines_what_it_does_not_decode() {
        assert!(decode(b"not a jpeg").is_none());
        let photo = crate::synth::render(2, 320, 240);
        assert!(decode(&photo.jpeg[..photo.jpeg.len() / 2]).is_none());
        // Corrupt bytes anywhere never panic: each answer is a picture or None.
        let mut rng = crate::synth::Rng::new(9);
        for _ in 0..300 {
            let mut bad = photo.jpeg.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bad.len().min(700));
                bad[i] = rng.below(256) as u8;
            }
            let _ = decode(&bad);
        }
    }
}
