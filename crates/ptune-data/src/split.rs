//! Deterministic seeded shuffles and splits (splitmix64 + Fisher–Yates: the same on every machine).

/// A splitmix64 stream.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `0..n` shuffled with `seed`.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix::new(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// Splits `0..n` into (train, dev, test) index lists with the given dev/test fractions, seeded.
pub fn split_indices(
    n: usize,
    dev: f64,
    test: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut order = shuffled(n, seed).into_iter();
    let n_dev = ((n as f64 * dev).round() as usize).min(n);
    let n_test = ((n as f64 * test).round() as usize).min(n - n_dev);
    let dev_idx: Vec<usize> = order.by_ref().take(n_dev).collect();
    let test_idx: Vec<usize> = order.by_ref().take(n_test).collect();
    (order.collect(), dev_idx, test_idx)
}

/// Splits groups (e.g. E2E meaning representations) rather than rows: every row of a group lands in
/// the same split. Returns the split (0 train, 1 dev, 2 test) of each group index.
pub fn split_groups(n_groups: usize, dev: f64, test: f64, seed: u64) -> Vec<u8> {
    let (_, dev_idx, test_idx) = split_indices(n_groups, dev, test, seed);
    let mut which = vec![0u8; n_groups];
    for (indices, split) in [(dev_idx, 1), (test_idx, 2)] {
        for i in indices {
            if let Some(w) = which.get_mut(i) {
                *w = split;
            }
        }
    }
    which
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_deterministic_and_disjoint() {
        let (a, b, c) = split_indices(100, 0.1, 0.2, 7);
        assert_eq!((a.len(), b.len(), c.len()), (70, 10, 20));
        assert_eq!(split_indices(100, 0.1, 0.2, 7), (a.clone(), b.clone(), c.clone()));
        let mut all: Vec<usize> = a.into_iter().chain(b).chain(c).collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(shuffled(50, 1), shuffled(50, 2));
    }
}
