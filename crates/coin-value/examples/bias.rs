//! Diameter bias of the detector per table and coin metal, over the synthetic set and the
//! held-out seeds: `cargo run -p coin-value --release --example bias`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coin_value::{DecodeLimits, Denomination, count, synth};
use std::collections::BTreeMap;

fn main() {
    let mut stats: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut missed: BTreeMap<String, usize> = BTreeMap::new();
    for seed in (0..48).chain(1000..1048) {
        let (w, h) = synth::set_size(seed);
        let p = synth::render(seed, w, h);
        let r = count(&p.jpeg, &DecodeLimits::default(), false).unwrap();
        for t in &p.coins {
            let metal = match t.denomination {
                Denomination::Penny => "copper",
                Denomination::Dollar => "brass",
                _ => "silver",
            };
            let key = format!("{:?}/{metal}", p.background);
            match r
                .coins
                .iter()
                .find(|c| (c.center_x - t.x).hypot(c.center_y - t.y) < 0.3 * t.diameter_px)
            {
                Some(c) => stats
                    .entry(key)
                    .or_default()
                    .push(c.diameter_px / t.diameter_px),
                None => *missed.entry(key).or_default() += 1,
            }
        }
    }
    for (k, mut v) in stats {
        v.sort_by(f64::total_cmp);
        let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
        println!(
            "{k:16} n={:3} missed={:2} ratio p10={:.3} p50={:.3} p90={:.3} max={:.3}",
            v.len(),
            missed.get(&k).unwrap_or(&0),
            q(0.1),
            q(0.5),
            q(0.9),
            q(1.0)
        );
    }
}
