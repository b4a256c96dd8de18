//! Exact totals over the synthetic set (seeds 0..48) and the held-out seeds (1000..1048),
//! one line per miss: `cargo run -p coin-value --release --example exact`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coin_value::{DecodeLimits, count, synth};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if !args.is_empty() {
        for seed in args {
            detail(seed);
        }
        return;
    }
    let seeds: Vec<u64> = (0..48).chain(1000..1048).collect();
    let results: Vec<(u64, bool, String)> = std::thread::scope(|s| {
        let chunks: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2))
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|&seed| {
                            let (w, h) = if seed % 1000 < 24 {
                                (1600, 1200)
                            } else {
                                (1500, 2000)
                            };
                            let p = synth::render(seed, w, h);
                            let r = count(&p.jpeg, &DecodeLimits::default(), false).unwrap();
                            let ok =
                                r.total_cents == p.total_cents && r.coins.len() == p.coins.len();
                            let line = format!(
                                "seed {seed} ({}): got {}c/{} coins (rejected {}), truth {}c/{}",
                                p.describe(),
                                r.total_cents,
                                r.coins.len(),
                                r.rejected,
                                p.total_cents,
                                p.coins.len()
                            );
                            (seed, ok, line)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for (_, ok, line) in &results {
        if !ok {
            println!("miss {line}");
        }
    }
    let set = results.iter().filter(|r| r.0 < 1000 && r.1).count();
    let held = results.iter().filter(|r| r.0 >= 1000 && r.1).count();
    println!("synthetic set: {set}/48 exact; held-out: {held}/48 exact");
}

/// Every true coin of `seed` with what was found at its place, then anything else found.
fn detail(seed: u64) {
    let (w, h) = if seed % 1000 < 24 {
        (1600, 1200)
    } else {
        (1500, 2000)
    };
    let p = synth::render(seed, w, h);
    let r = count(&p.jpeg, &DecodeLimits::default(), false).unwrap();
    println!("seed {seed}: {} px/mm {:.3}", p.describe(), r.pixels_per_mm);
    let mut used = vec![false; r.coins.len()];
    for t in &p.coins {
        let hit = r
            .coins
            .iter()
            .position(|c| (c.center_x - t.x).hypot(c.center_y - t.y) < 0.3 * t.diameter_px);
        match hit {
            Some(i) => {
                used[i] = true;
                let c = &r.coins[i];
                println!(
                    "  {:?} ({:.0},{:.0}) {:.1}px -> {:?} {:.1}px ratio {:.3} {:.2}mm conf {:.2}",
                    t.denomination,
                    t.x,
                    t.y,
                    t.diameter_px,
                    c.denomination,
                    c.diameter_px,
                    c.diameter_px / t.diameter_px,
                    c.diameter_mm,
                    c.confidence
                );
            }
            None => println!(
                "  {:?} ({:.0},{:.0}) {:.1}px -> MISSED",
                t.denomination, t.x, t.y, t.diameter_px
            ),
        }
    }
    for (c, _) in r.coins.iter().zip(&used).filter(|(_, u)| !**u) {
        println!(
            "  EXTRA {:?} ({:.0},{:.0}) {:.1}px",
            c.denomination, c.center_x, c.center_y, c.diameter_px
        );
    }
}
