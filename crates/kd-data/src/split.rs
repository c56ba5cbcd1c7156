//! Stratified, seeded splits.

use kd_core::rng::KeyedRng;
use kd_core::{KdError, Result};

/// Splits the positions `0..labels.len()` into `fractions.len() + 1` parts, stratified by class:
/// part `k + 1` gets `fractions[k]` of the samples, part 0 (the training part) the rest.
///
/// Within each class the members are shuffled from `(seed, class)`; each part's size is
/// `round(n * fraction)` shared among the classes by largest remainder, so every class is
/// represented in proportion (to within one sample). A class keeps at least one sample in the
/// training part. Each part is returned in ascending position order.
pub fn stratified_split(labels: &[usize], classes: usize, fractions: &[f64], seed: u64) -> Result<Vec<Vec<usize>>> {
    check_fractions(fractions)?;
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(KdError::LabelOutOfRange { label: l, sample: i, num_classes: classes });
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l].push(i);
    }
    let n = labels.len();
    // counts[c][k]: how many of class c go to part k + 1.
    let mut counts = vec![vec![0usize; fractions.len()]; classes];
    for (k, &f) in fractions.iter().enumerate() {
        let target = (n as f64 * f).round() as usize;
        let quotas: Vec<f64> = members.iter().map(|m| m.len() as f64 * f).collect();
        let mut given = 0;
        for c in 0..classes {
            counts[c][k] = quotas[c].floor() as usize;
            given += counts[c][k];
        }
        // Largest remainders first; ties go to the lower class index (deterministic).
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| (quotas[b] - quotas[b].floor()).total_cmp(&(quotas[a] - quotas[a].floor())).then(a.cmp(&b)));
        for &c in order.iter().cycle().take(classes * 2) {
            if given >= target {
                break;
            }
            if counts[c][k] < members[c].len() {
                counts[c][k] += 1;
                given += 1;
            }
        }
    }
    let mut parts = vec![Vec::new(); fractions.len() + 1];
    for (c, m) in members.iter_mut().enumerate() {
        // Keep one sample of each class for training: a class absent from training cannot be
        // learnt, and the evaluation parts only lose one sample.
        let room = m.len().saturating_sub(1);
        while counts[c].iter().sum::<usize>() > room {
            let k = (0..fractions.len()).max_by_key(|&k| (counts[c][k], k)).expect("at least one fraction");
            counts[c][k] -= 1;
        }
        shuffle(m, &mut KeyedRng::new(&[seed, c as u64, 0x57A7]));
        let mut start = 0;
        for (k, &count) in counts[c].iter().enumerate() {
            parts[k + 1].extend_from_slice(&m[start..start + count]);
            start += count;
        }
        parts[0].extend_from_slice(&m[start..]);
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    Ok(parts)
}

/// The positions in a seeded random order (so that a prefix of a split is a random sample).
pub fn shuffled(mut positions: Vec<usize>, seed: u64, stream: u64) -> Vec<usize> {
    shuffle(&mut positions, &mut KeyedRng::new(&[seed, stream, 0x5EF1]));
    positions
}

fn shuffle(v: &mut [usize], rng: &mut KeyedRng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

fn check_fractions(fractions: &[f64]) -> Result<()> {
    if fractions.is_empty() {
        return Err(KdError::InvalidConfig("a split needs at least one fraction".into()));
    }
    if let Some(f) = fractions.iter().find(|f| !(0.0..1.0).contains(*f)) {
        return Err(KdError::InvalidConfig(format!("split fraction {f} is not in [0, 1)")));
    }
    let total: f64 = fractions.iter().sum();
    if total >= 1.0 {
        return Err(KdError::InvalidConfig(format!("split fractions {fractions:?} add up to {total}: nothing is left for training")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<usize> {
        // Unbalanced, class-sorted (like spambase): 700 of class 0, 250 of 1, 47 of 2, 3 of 3.
        [(0, 700), (1, 250), (2, 47), (3, 3)].iter().flat_map(|&(c, n)| std::iter::repeat_n(c, n)).collect()
    }

    #[test]
    fn parts_cover_everything_once_with_exact_sizes() {
        let labels = labels();
        let parts = stratified_split(&labels, 4, &[0.2, 0.2], 5).unwrap();
        let mut all: Vec<usize> = parts.concat();
        all.sort();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        assert_eq!(parts[1].len(), 200);
        assert_eq!(parts[2].len(), 200);
        assert_eq!(parts[0].len(), 600);
    }

    #[test]
    fn every_class_is_in_proportion() {
        let labels = labels();
        let fractions = [0.2, 0.2];
        let parts = stratified_split(&labels, 4, &fractions, 9).unwrap();
        for c in 0..4 {
            let n_c = labels.iter().filter(|&&l| l == c).count() as f64;
            for (k, &f) in fractions.iter().enumerate() {
                let got = parts[k + 1].iter().filter(|&&p| labels[p] == c).count() as f64;
                assert!((got - n_c * f).abs() < 1.0 + 1e-9, "class {c} part {k}: {got} vs {}", n_c * f);
            }
            assert!(parts[0].iter().any(|&p| labels[p] == c), "class {c} missing from training");
        }
    }

    #[test]
    fn seeded_and_deterministic() {
        let labels = labels();
        let a = stratified_split(&labels, 4, &[0.1], 1).unwrap();
        assert_eq!(a, stratified_split(&labels, 4, &[0.1], 1).unwrap());
        assert_ne!(a, stratified_split(&labels, 4, &[0.1], 2).unwrap());
    }

    #[test]
    fn zero_fraction_and_tiny_classes() {
        let parts = stratified_split(&[0, 1, 1, 2], 3, &[0.0], 0).unwrap();
        assert!(parts[1].is_empty());
        assert_eq!(parts[0], vec![0, 1, 2, 3]);
        // A single sample of a class stays in training even when the fractions want it.
        let parts = stratified_split(&[0, 0, 0, 0, 1], 2, &[0.4, 0.4], 0).unwrap();
        assert!(parts[0].contains(&4));
    }

    #[test]
    fn bad_fractions_are_errors() {
        assert!(stratified_split(&[0, 1], 2, &[0.5, 0.5], 0).is_err());
        assert!(stratified_split(&[0, 1], 2, &[-0.1], 0).is_err());
        assert!(stratified_split(&[0, 1], 2, &[f64::NAN], 0).is_err());
        assert!(stratified_split(&[0, 5], 2, &[0.1], 0).is_err());
    }

    #[test]
    fn shuffled_is_a_permutation() {
        let v: Vec<usize> = (10..60).collect();
        let s = shuffled(v.clone(), 3, 1);
        assert_ne!(s, v);
        let mut t = s.clone();
        t.sort();
        assert_eq!(t, v);
        assert_eq!(s, shuffled(v, 3, 1));
    }
}
