//! Order statistics over samples in milliseconds.

/// A set of measurements in milliseconds, sorted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples(Vec<f64>);

impl Samples {
    pub(crate) fn new(mut v: Vec<f64>) -> Self {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        Self(v)
    }

    pub(crate) fn from_nanos(ns: &[u64]) -> Self {
        Self::new(ns.iter().map(|n| *n as f64 / 1e6).collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    pub(crate) fn pct(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        Some(self.0[rank.clamp(1, self.0.len()) - 1])
    }

    pub(crate) fn median(&self) -> Option<f64> {
        self.pct(50.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = Samples::new((1..=100).map(f64::from).rev().collect());
        assert_eq!(s.pct(50.0), Some(50.0));
        assert_eq!(s.pct(99.0), Some(99.0));
        assert_eq!(s.pct(100.0), Some(100.0));
        assert_eq!(s.pct(0.0), Some(1.0));
        assert_eq!(Samples::default().median(), None);
        assert_eq!(Samples::new(vec![3.0, 1.0, 2.0]).median(), Some(2.0));
    }
}
