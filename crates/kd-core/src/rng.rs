//! Deterministic randomness from (seed, stream, index) keys.
//!
//! Shuffles and augmentations are pure functions of their key, so a run is reproducible
//! whatever the thread count, and resuming at epoch `e` needs no saved RNG state.

/// SplitMix64 finaliser: a good 64-bit mix of one word.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a key made of several words.
pub fn hash_key(words: &[u64]) -> u64 {
    words.iter().fold(0x5EED_u64, |acc, &w| mix64(acc ^ mix64(w)))
}

/// A small, fast, seedable generator (SplitMix64 stream).
#[derive(Debug, Clone)]
pub struct KeyedRng {
    state: u64,
}

impl KeyedRng {
    /// A generator for the given key words.
    pub fn new(words: &[u64]) -> Self {
        KeyedRng { state: hash_key(words) }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A permutation of `0..n` determined by `(seed, epoch)` (Fisher-Yates).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = KeyedRng::new(&[seed, epoch, 0x5AFF1E]);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_epoch() {
        let a = permutation(100, 7, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, permutation(100, 7, 1));
        assert_ne!(a, permutation(100, 7, 2));
    }
}
