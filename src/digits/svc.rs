//! The shipped SVC's post-processing: one-vs-one decision values to a digit and probabilities,
//! exactly as libsvm (inside scikit-learn) computes them.

use serde::{Deserialize, Serialize};

use super::CLASSES;

/// Platt-scaling parameters of the shipped SVC (`probA_`, `probB_`), from its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlattParameters {
    /// libsvm's `probA` per pair.
    pub prob_a: Vec<f64>,
    /// libsvm's `probB` per pair.
    pub prob_b: Vec<f64>,
}

/// The digit scikit-learn's `predict` gives: one-vs-one votes, ties to the lower digit.
pub fn vote(decision: &[f32]) -> usize {
    let mut votes = [0usize; CLASSES];
    for ((i, j), &d) in pairs().zip(decision) {
        votes[if d > 0.0 { i } else { j }] += 1;
    }
    // max_by_key keeps the last maximum, so search from the right-hand end reversed.
    (0..CLASSES).rev().max_by_key(|&c| votes[c]).unwrap_or(0)
}

fn pairs() -> impl Iterator<Item = (usize, usize)> {
    (0..CLASSES).flat_map(|i| (i + 1..CLASSES).map(move |j| (i, j)))
}

/// libsvm's `sigmoid_predict`.
fn sigmoid(decision: f64, a: f64, b: f64) -> f64 {
    let f = decision * a + b;
    if f >= 0.0 {
        (-f).exp() / (1.0 + (-f).exp())
    } else {
        1.0 / (1.0 + f.exp())
    }
}

/// scikit-learn's `predict_proba`: libsvm's Platt scaling per pair, then pairwise coupling
/// (`multiclass_probability` in libsvm's svm.cpp).
pub fn probabilities(decision: &[f32], platt: &PlattParameters) -> [f64; CLASSES] {
    const MIN_PROB: f64 = 1e-7;
    let k = CLASSES;
    let mut r = [[0f64; CLASSES]; CLASSES];
    for (p, (i, j)) in pairs().enumerate() {
        let prob = sigmoid(f64::from(decision[p]), platt.prob_a[p], platt.prob_b[p]);
        r[i][j] = prob.clamp(MIN_PROB, 1.0 - MIN_PROB);
        r[j][i] = 1.0 - r[i][j];
    }
    let mut q = [[0f64; CLASSES]; CLASSES];
    for t in 0..k {
        for j in 0..t {
            q[t][t] += r[j][t] * r[j][t];
            q[t][j] = q[j][t];
        }
        for j in t + 1..k {
            q[t][t] += r[j][t] * r[j][t];
            q[t][j] = -r[j][t] * r[t][j];
        }
    }
    let mut p = [1.0 / k as f64; CLASSES];
    let mut qp = [0f64; CLASSES];
    let eps = 0.005 / k as f64;
    for _ in 0..100.max(k) {
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = (0..k).map(|j| q[t][j] * p[j]).sum();
            pqp += p[t] * qp[t];
        }
        let max_error = qp.iter().map(|&v| (v - pqp).abs()).fold(0.0, f64::max);
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t][t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t][t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t][j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digits::PAIRS;

    #[test]
    fn votes_follow_libsvm_pair_order_and_ties_go_low() {
        // Every pair decided for the lower class: 0 wins all nine of its pairs.
        assert_eq!(vote(&[1.0; PAIRS]), 0);
        // Every pair decided for the higher class: 9 wins.
        assert_eq!(vote(&[-1.0; PAIRS]), 9);
    }

    #[test]
    fn probabilities_sum_to_one() {
        let platt = PlattParameters {
            prob_a: vec![-2.0; PAIRS],
            prob_b: vec![0.1; PAIRS],
        };
        let decision: Vec<f32> = (0..PAIRS).map(|p| (p as f32 * 0.37).sin()).collect();
        let p = probabilities(&decision, &platt);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p.iter().all(|&v| v > 0.0));
    }
}
