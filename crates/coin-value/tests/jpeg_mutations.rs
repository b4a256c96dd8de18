//! The DC-only JPEG decoder reads untrusted bytes: random damage anywhere in a real photo
//! (headers, tables, entropy-coded data, markers) must give an answer or an error, never
//! a panic, and a decode of the damaged file must stay bounded by its declared size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coin_value::{DecodeLimits, jpeg_dc, synth};

/// xorshift64*: reproducible damage without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn damaged_jpegs_never_panic() {
    let photo = synth::render(3, 1024, 768);
    let good = &photo.jpeg;
    let (w, h) = {
        let img = jpeg_dc::decode(good).expect("a baseline JPEG decodes");
        (img.width(), img.height())
    };
    let limits = DecodeLimits::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..600 {
        let mut bad = good.clone();
        match round % 4 {
            // A few bytes flipped anywhere.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(bad.len());
                    bad[i] ^= 1 << rng.below(8);
                }
            }
            // Bytes in the headers and tables (the first 700 hold SOF, DHT, DQT, SOS).
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(700.min(bad.len()));
                    bad[i] = rng.next() as u8;
                }
            }
            // Truncated anywhere.
            2 => bad.truncate(rng.below(bad.len())),
            // A run of the entropy-coded data replaced by noise or by marker bytes.
            _ => {
                let start = 700 + rng.below(bad.len() - 800);
                let len = 1 + rng.below(64);
                for b in &mut bad[start..start + len] {
                    *b = if rng.below(4) == 0 {
                        0xFF
                    } else {
                        rng.next() as u8
                    };
                }
            }
        }
        if let Some(img) = jpeg_dc::decode(&bad) {
            // Damage must not make the picture bigger than the header says it is.
            assert!(
                img.width() <= w.max(8192) && img.height() <= h.max(8192),
                "round {round}: {}x{}",
                img.width(),
                img.height()
            );
        }
        // The whole count: an answer or an error, never a panic.
        let _ = coin_value::count(&bad, &limits, false);
    }
}
