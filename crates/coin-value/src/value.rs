//! Valuation without a reference coin: the pixels-per-millimetre scale is the one that
//! best explains every coin at once, from the ratios of their diameters and whether
//! each is copper or silver. Each coin's cost is a negative log-likelihood (size error,
//! colour, rarity), capped so one odd object cannot drag the scale.

use crate::detect::Circle;

/// US coins in circulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Denomination {
    Penny,
    Nickel,
    Dime,
    Quarter,
    HalfDollar,
    Dollar,
}

/// Which colour a denomination has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metal {
    Copper,
    Silver,
    /// The golden dollar: brass, between the two.
    Brass,
}

impl Denomination {
    pub const ALL: [Denomination; 6] = [
        Self::Penny,
        Self::Nickel,
        Self::Dime,
        Self::Quarter,
        Self::HalfDollar,
        Self::Dollar,
    ];

    /// Diameter in millimetres (US Mint specifications).
    pub fn diameter_mm(self) -> f64 {
        match self {
            Self::Penny => 19.05,
            Self::Nickel => 21.21,
            Self::Dime => 17.91,
            Self::Quarter => 24.26,
            Self::HalfDollar => 30.61,
            Self::Dollar => 26.49,
        }
    }

    pub fn cents(self) -> u32 {
        match self {
            Self::Penny => 1,
            Self::Nickel => 5,
            Self::Dime => 10,
            Self::Quarter => 25,
            Self::HalfDollar => 50,
            Self::Dollar => 100,
        }
    }

    fn metal(self) -> Metal {
        match self {
            Self::Penny => Metal::Copper,
            Self::Dollar => Metal::Brass,
            _ => Metal::Silver,
        }
    }

    /// Cost of assuming this coin at all: half dollars and dollars are rare in pockets.
    fn rarity(self) -> f64 {
        match self {
            Self::HalfDollar | Self::Dollar => 3.0,
            _ => 0.0,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Penny => "1c",
            Self::Nickel => "5c",
            Self::Dime => "10c",
            Self::Quarter => "25c",
            Self::HalfDollar => "50c",
            Self::Dollar => "$1",
        }
    }
}

/// Relative size error (log) of one measured diameter, whatever its size.
const SIGMA: f64 = 0.02;
/// Diameter error in working pixels: a rim is located to a fraction of a pixel, so
/// small coins in the picture are relatively less certain than big ones.
const SIGMA_PX: f64 = 0.8;

/// Relative (log) error of a diameter of `d_px` working pixels.
fn sigma_of(d_px: f64) -> f64 {
    SIGMA.hypot(SIGMA_PX / d_px.max(1.0))
}
/// Cost past which a coin counts as "fits nothing" (~4.5 sigma).
const OUTLIER: f64 = 10.0;

/// A valued coin.
#[derive(Debug, Clone, PartialEq)]
pub struct Valued {
    pub denomination: Option<Denomination>,
    pub confidence: f64,
    pub diameter_mm: f64,
}

/// The scale chosen and every coin valued at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Valuation {
    /// Working-image pixels per millimetre.
    pub px_per_mm: f64,
    pub coins: Vec<Valued>,
}

/// Probability that each coin is copper: a logistic on its warmth around a threshold
/// taken from the gap between warm and cool coins when the picture shows both, so a
/// colour cast of the light moves the threshold with it.
fn copper_probability(coins: &[Circle]) -> Vec<f64> {
    const DEFAULT: f64 = 0.12;
    let mut w: Vec<f64> = coins.iter().map(|c| c.warmth).collect();
    w.sort_by(f64::total_cmp);
    let mut thr = DEFAULT;
    if let Some((gap, mid)) = w
        .windows(2)
        .map(|p| (p[1] - p[0], (p[0] + p[1]) / 2.0))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        && gap >= 0.06
        && (0.05..=0.25).contains(&mid)
    {
        thr = mid;
    }
    coins
        .iter()
        .map(|c| {
            let z = (c.warmth - thr) / 0.02;
            (1.0 / (1.0 + (-z).exp())).clamp(0.01, 0.99)
        })
        .collect()
}

/// Log pixels per millimetre, with pennies measured at their own, slightly different
/// scale (see `value`).
#[derive(Debug, Clone, Copy)]
struct Scale {
    ln_s: f64,
    ln_copper: f64,
}

impl Scale {
    fn ln_of(self, den: Denomination) -> f64 {
        match den.metal() {
            Metal::Copper => self.ln_s + self.ln_copper,
            _ => self.ln_s,
        }
    }
}

/// One coin's part of the cost, with every logarithm taken once: the scale search
/// evaluates it tens of thousands of times.
struct Term {
    ln_d: f64,
    /// `ln(d_px / diameter_mm)` per denomination: the log scale at which it fits exactly.
    ln_fit: [f64; 6],
    sg: f64,
    /// Colour and rarity cost per denomination, in `Denomination::ALL` order.
    prior: [f64; 6],
}

impl Term {
    fn new(d_px: f64, pc: f64, sg: f64) -> Self {
        let prior = Denomination::ALL.map(|den| {
            let colour = match den.metal() {
                Metal::Copper => -pc.ln(),
                Metal::Silver => -(1.0 - pc).ln(),
                // Brass reads as either; never as likely as the right metal.
                Metal::Brass => -(0.15f64).ln(),
            };
            colour + den.rarity()
        });
        let ln_d = d_px.ln();
        Self {
            ln_d,
            ln_fit: Denomination::ALL.map(|den| ln_d - den.diameter_mm().ln()),
            sg,
            prior,
        }
    }

    /// Cost of this coin being `Denomination::ALL[j]` at scale `s`.
    fn cost(&self, j: usize, s: Scale) -> f64 {
        let den = Denomination::ALL[j];
        let e = (self.ln_fit[j] - s.ln_of(den)) / self.sg;
        0.5 * e * e + self.prior[j]
    }

    /// The cheapest denomination's cost and index in `Denomination::ALL`, if any fits.
    fn best(&self, s: Scale) -> (f64, Option<usize>) {
        let mut best = (OUTLIER, None);
        for j in 0..Denomination::ALL.len() {
            let c = self.cost(j, s);
            if c < best.0 {
                best = (c, Some(j));
            }
        }
        best
    }
}

/// Chooses the scale and values every coin; `long_side` (working pixels) gives a weak
/// prior for pictures whose coins are all one size, where ratios cannot decide.
pub fn value(coins: &[Circle], long_side: f64) -> Valuation {
    if coins.is_empty() {
        return Valuation {
            px_per_mm: 0.0,
            coins: Vec::new(),
        };
    }
    let pc = copper_probability(coins);
    // A rim that only some of the rays agree on is measured less surely.
    let terms: Vec<Term> = coins
        .iter()
        .zip(&pc)
        .map(|(c, &p)| {
            let d = 2.0 * c.r;
            Term::new(d, p, sigma_of(d) / c.support.clamp(0.5, 1.0))
        })
        .collect();
    // A phone photo of coins on a table frames about 15-40 cm across.
    let ln_long = long_side.ln();
    let prior = |ln_s: f64| {
        let z = (ln_long - ln_s - 220f64.ln()) / 0.8;
        0.5 * z * z
    };
    // Copper coins are darker than silver ones, so on one table blur and shadow move
    // their measured rims the opposite way: pennies may be measured at their own scale,
    // a few percent off the other coins', when the picture holds both to compare.
    let mixed = pc.iter().any(|&p| p > 0.5) && pc.iter().any(|&p| p <= 0.5);
    let offsets: Vec<f64> = if mixed {
        (0..=METAL_STEPS)
            .map(|i| METAL_RANGE.ln() * (2.0 * i as f64 / METAL_STEPS as f64 - 1.0))
            .collect()
    } else {
        vec![0.0]
    };
    let mut best: Option<(f64, Scale)> = None;
    for ln_k in offsets {
        let (t, s) = fit_scale(&terms, ln_k, &prior);
        let t = t + 0.5 * (ln_k / METAL_SIGMA).powi(2);
        if best.is_none_or(|b| t < b.0) {
            best = Some((t, s));
        }
    }
    let Some((_, s)) = best else {
        return Valuation {
            px_per_mm: 0.0,
            coins: Vec::new(),
        };
    };
    let coins = terms
        .iter()
        .map(|t| {
            let (_, best) = t.best(s);
            let den = best.map(|j| Denomination::ALL[j]);
            let confidence = best.map_or(0.0, |j| {
                let costs = std::array::from_fn::<f64, 6, _>(|k| (-t.cost(k, s)).exp());
                costs[j] / (costs.iter().sum::<f64>() + (-OUTLIER).exp())
            });
            let ln_scale = den.map_or(s.ln_s, |den| s.ln_of(den));
            Valued {
                denomination: den,
                confidence,
                diameter_mm: (t.ln_d - ln_scale).exp(),
            }
        })
        .collect();
    Valuation {
        px_per_mm: s.ln_s.exp(),
        coins,
    }
}

/// Relative scale of copper coins to silver ones considered (either way), in how many
/// steps, and how unlikely a given offset is (log sigma).
const METAL_RANGE: f64 = 1.15;
const METAL_STEPS: usize = 14;
const METAL_SIGMA: f64 = 0.05;

/// The scale that best explains every coin with pennies measured `exp(ln_copper)`
/// times larger, and its total cost.
fn fit_scale(terms: &[Term], ln_copper: f64, prior: &dyn Fn(f64) -> f64) -> (f64, Scale) {
    let at = |ln_s: f64| Scale { ln_s, ln_copper };
    let total =
        |ln_s: f64| -> f64 { terms.iter().map(|t| t.best(at(ln_s)).0).sum::<f64>() + prior(ln_s) };
    // The optimum sits where some coin is exactly some denomination, or between such
    // points; try them all, then polish with assignments fixed.
    let mut best = (f64::INFINITY, 0.0);
    for t in terms {
        for (j, den) in Denomination::ALL.into_iter().enumerate() {
            let ln_s = t.ln_fit[j] - at(0.0).ln_of(den);
            let c = total(ln_s);
            if c < best.0 {
                best = (c, ln_s);
            }
        }
    }
    let mut ln_s = best.1;
    for _ in 0..4 {
        // Least squares of log-scale over coins that fit something.
        let (mut num, mut n) = (0.0, 0.0);
        for t in terms {
            if let (c, Some(j)) = t.best(at(ln_s))
                && c < OUTLIER
            {
                let wt = t.sg.powi(-2);
                num += wt * (t.ln_fit[j] - at(0.0).ln_of(Denomination::ALL[j]));
                n += wt;
            }
        }
        if n == 0.0 {
            break;
        }
        let next = num / n;
        if total(next) <= total(ln_s) {
            ln_s = next;
        } else {
            break;
        }
    }
    (total(ln_s), at(ln_s))
}
