//! Positions in a video: seconds (`12.5`), timestamps (`00:01:02.5`, `1:02`) or a
//! percentage of the duration (`10%`), resolved to microseconds like `ffmpeg -ss`.

use std::fmt;

/// A position as asked; resolved against the duration once the file is open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Position {
    /// Microseconds from the start of the presentation.
    Micros(i64),
    /// Percent of the duration, 0..=100.
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position `{text}`: {reason}")]
pub struct PositionError {
    pub text: String,
    pub reason: &'static str,
}

impl Position {
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let t = text.trim();
        let err = |reason| PositionError {
            text: text.to_owned(),
            reason,
        };
        if t.is_empty() {
            return Err(err(
                "empty; use seconds (12.5), HH:MM:SS.ms or a percentage (10%)",
            ));
        }
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| err("not a number before `%`"))?;
            if !(0.0..=100.0).contains(&v) || !v.is_finite() {
                return Err(err("a percentage must be between 0% and 100%"));
            }
            return Ok(Self::Percent(v));
        }
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() > 3 {
            return Err(err("too many `:`; use HH:MM:SS.ms"));
        }
        let mut secs = 0f64;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let v: f64 = if last {
                part.parse().map_err(|_| err("not a number of seconds"))?
            } else {
                part.parse::<u64>()
                    .map_err(|_| err("hours and minutes must be whole numbers"))?
                    as f64
            };
            if !v.is_finite() || v < 0.0 {
                return Err(err("must not be negative"));
            }
            if parts.len() > 1 && i > 0 && v >= 60.0 {
                return Err(err("minutes and seconds must be below 60"));
            }
            secs = secs * 60.0 + v;
        }
        if secs > 1e9 {
            return Err(err("too large"));
        }
        Ok(Self::Micros((secs * 1e6).round() as i64))
    }

    /// Microseconds, given the duration in microseconds (needed only for percentages).
    pub fn resolve(self, duration_us: Option<i64>) -> Option<i64> {
        match self {
            Self::Micros(us) => Some(us),
            Self::Percent(p) => duration_us.map(|d| (d as f64 * p / 100.0).round() as i64),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Micros(us) => write!(f, "{}", *us as f64 / 1e6),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Position::parse("12.5").unwrap(),
            Position::Micros(12_500_000)
        );
        assert_eq!(Position::parse("0").unwrap(), Position::Micros(0));
        assert_eq!(
            Position::parse("00:01:02.5").unwrap(),
            Position::Micros(62_500_000)
        );
        assert_eq!(
            Position::parse("1:02").unwrap(),
            Position::Micros(62_000_000)
        );
        assert_eq!(Position::parse("10%").unwrap(), Position::Percent(10.0));
        assert_eq!(
            Position::parse("50%").unwrap().resolve(Some(4_000_000)),
            Some(2_000_000)
        );
        assert_eq!(Position::parse("50%").unwrap().resolve(None), None);
        for bad in ["", "abc", "-1", "101%", "1:2:3:4", "1:75", "x%", "1.5:00"] {
            assert!(Position::parse(bad).is_err(), "{bad} should fail");
        }
    }
}
