//! Exact totals over the synthetic set (seeds 0..48) and the held-out seeds (1000..1048),
//! one line per miss: `cargo run -p coin-value --release --example exact`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coin_value::{DecodeLimits, count, synth};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if std::env::args().nth(1).as_deref() == Some("profile") {
        profile(args[0]);
        return;
    }
    if !args.is_empty() {
        for seed in args {
            detail(seed);
        }
        return;
    }
    // FARGO_FRESH=N adds seeds N..N+48, a set no one has looked at yet.
    let fresh: Option<u64> = std::env::var("FARGO_FRESH")
        .ok()
        .and_then(|v| v.parse().ok());
    let seeds: Vec<u64> = (0..48)
        .chain(1000..1048)
        .chain(fresh.into_iter().flat_map(|f| f..f + 48))
        .collect();
    let results: Vec<(u64, bool, String)> = std::thread::scope(|s| {
        let chunks: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2))
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|&seed| {
                            let (w, h) = synth::set_size(seed);
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
    let held = results
        .iter()
        .filter(|r| (1000..1048).contains(&r.0) && r.1)
        .count();
    println!("synthetic set: {set}/48 exact; held-out: {held}/48 exact");
    if let Some(f) = fresh {
        let n = results.iter().filter(|r| r.0 >= f && r.1).count();
        println!("fresh seeds {f}..{}: {n}/48 exact", f + 48);
    }
}

/// Every true coin of `seed` with what was found at its place, then anything else found.
fn detail(seed: u64) {
    // FARGO_SIZE=4032x3024 renders the seed at another size.
    let size: Option<(u32, u32)> = std::env::var("FARGO_SIZE").ok().and_then(|v| {
        let (w, h) = v.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    });
    let (w, h) = size.unwrap_or(synth::set_size(seed));
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

/// Mean lightness around each true coin of `seed` against radius / true radius.
fn profile(seed: u64) {
    let (w, h) = synth::set_size(seed);
    let p = synth::render(seed, w, h);
    let d = coin_value::decode::decode(&p.jpeg, &DecodeLimits::default()).unwrap();
    let img = &d.image;
    let f = d.factor;
    let at = |x: f64, y: f64| -> f64 {
        let (x, y) = (
            x.clamp(0.0, img.width() as f64 - 2.0),
            y.clamp(0.0, img.height() as f64 - 2.0),
        );
        let (x0, y0) = (x as u32, y as u32);
        let (fx, fy) = (x - x0 as f64, y - y0 as f64);
        let l = |x: u32, y: u32| img.get_pixel(x, y).0.iter().map(|&v| v as f64).sum::<f64>() / 3.0;
        let a = l(x0, y0) * (1.0 - fx) + l(x0 + 1, y0) * fx;
        let b = l(x0, y0 + 1) * (1.0 - fx) + l(x0 + 1, y0 + 1) * fx;
        a * (1.0 - fy) + b * fy
    };
    println!("seed {seed}: {}", p.describe());
    for t in &p.coins {
        let (cx, cy, r) = (t.x / f, t.y / f, t.diameter_px / 2.0 / f);
        let mut line = format!("{:?} r={r:.1}:", t.denomination);
        for k in 0..=24 {
            let q = 0.7 + 0.025 * k as f64;
            let v: f64 = (0..64)
                .map(|i| {
                    let a = i as f64 * std::f64::consts::TAU / 64.0;
                    at(cx + q * r * a.cos(), cy + q * r * a.sin())
                })
                .sum::<f64>()
                / 64.0;
            line += &format!(" {v:.0}");
        }
        println!("{line}");
    }
}
