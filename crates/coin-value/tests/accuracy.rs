#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Accuracy on the seeded synthetic test set (exact totals) and on scikit-image's
//! `coins()` picture (24 coins, count only).

use coin_value::{DecodeLimits, count, synth};

/// Size of the synthetic set the tests check; `coin-value synth` writes the same photos.
const SEEDS: u64 = 48;

fn check(seed: u64, w: u32, h: u32) -> Result<(), String> {
    let photo = synth::render(seed, w, h);
    let r = count(&photo.jpeg, &DecodeLimits::default(), false).map_err(|e| e.to_string())?;
    let (ew, eh) = (photo.width, photo.height);
    if (r.image_width, r.image_height) != (ew, eh) {
        return Err(format!(
            "seed {seed}: oriented size {}x{} != {ew}x{eh}",
            r.image_width, r.image_height
        ));
    }
    if r.total_cents != photo.total_cents || r.coins.len() != photo.coins.len() {
        let found: Vec<String> = r
            .coins
            .iter()
            .map(|c| {
                format!(
                    "{:?}@({:.0},{:.0}) {:.2}mm",
                    c.denomination, c.center_x, c.center_y, c.diameter_mm
                )
            })
            .collect();
        let truth: Vec<String> = photo
            .coins
            .iter()
            .map(|c| {
                format!(
                    "{:?}@({:.0},{:.0}) {:.1}px",
                    c.denomination, c.x, c.y, c.diameter_px
                )
            })
            .collect();
        return Err(format!(
            "seed {seed} ({}): got {}c from {} coins (rejected {})\n  found: {}\n  truth: {}",
            photo.describe(),
            r.total_cents,
            r.coins.len(),
            r.rejected,
            found.join(", "),
            truth.join(", ")
        ));
    }
    Ok(())
}

/// Every photo of the set must come out exact. It runs in chunks of six photos, one test
/// each, so they run in parallel and each takes seconds: seeds 0..24 at 1600 x 1200,
/// 24..48 at 1500 x 2000 (portrait). Both are worked on at ~500 px, as a 12 MP photo is
/// (512 x 384 and 375 x 500).
fn chunk(first: u64) {
    let mut failures = Vec::new();
    for seed in first..first + 6 {
        let (w, h) = synth::set_size(seed);
        if let Err(e) = check(seed, w, h) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn synthetic_seeds_00_05() {
    chunk(0);
}
#[test]
fn synthetic_seeds_06_11() {
    chunk(6);
}
#[test]
fn synthetic_seeds_12_17() {
    chunk(12);
}
#[test]
fn synthetic_seeds_18_23() {
    chunk(18);
}
#[test]
fn synthetic_seeds_24_29() {
    chunk(24);
}
#[test]
fn synthetic_seeds_30_35() {
    chunk(30);
}
#[test]
fn synthetic_seeds_36_41() {
    chunk(36);
}
#[test]
fn synthetic_seeds_42_47() {
    chunk(42);
}

/// Phone-sized photos, whose JPEGs are decoded from their DC terms alone (the chunks
/// above are small enough to go through `jpeg_decoder`'s DCT scaling instead).
#[test]
fn twelve_megapixel_photos() {
    let failures: Vec<String> = [1u64, 2, 3, 6]
        .into_iter()
        .filter_map(|seed| check(seed, 4032, 3024).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// scikit-image's coins (`skimage.data.coins()`), the committed copy.
fn skimage_coins() -> Vec<u8> {
    let committed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/skimage-coins.png");
    std::fs::read(committed).expect("tests/data/skimage-coins.png")
}

#[test]
fn skimage_coins_has_24() {
    let r = count(&skimage_coins(), &DecodeLimits::default(), false).unwrap();
    assert_eq!(
        r.coins.len() + r.rejected,
        24,
        "found {} coins and {} other round objects",
        r.coins.len(),
        r.rejected
    );
}

/// Held-out seeds 1000..1048 at the same sizes as the set above: how well the detector
/// generalises. Reports the exact count and each miss; run with
/// `cargo test -p coin-value --release --test accuracy -- --ignored`. Their misses were
/// studied once they were measured, so for a figure on photos nobody has looked at, use
/// a new range: `FARGO_FRESH=N cargo run -p coin-value --release --example exact`.
#[test]
#[ignore = "measurement, not a bar: prints the exact count on held-out seeds"]
fn held_out_seeds() {
    let mut exact = 0;
    for i in 0..SEEDS {
        let (w, h) = synth::set_size(1000 + i);
        match check(1000 + i, w, h) {
            Ok(()) => exact += 1,
            Err(e) => eprintln!("held-out miss: {e}"),
        }
    }
    eprintln!("held-out: {exact} exact of {SEEDS}");
}
