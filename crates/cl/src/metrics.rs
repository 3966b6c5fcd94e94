//! The field's continual-learning metrics, computed from the accuracy matrix.
//!
//! `R[i][j]` is the test accuracy on task `j` after training on task `i` (`T` tasks, both
//! indices from 0), `b[j]` the accuracy on task `j` of the network at its random initialisation.
//! Definitions follow Lopez-Paz & Ranzato (2017) and Chaudhry et al. (2018); see PROTOCOLS.md.

use serde::Serialize;

/// Summary metrics of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Average accuracy: `ACC = (1/T) sum_j R[T-1][j]`.
    pub acc: f64,
    /// Backward transfer, averaged over the `T-1` earlier tasks:
    /// `BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j])`. `None` for a single task.
    pub bwt: Option<f64>,
    /// Backward transfer as GEM's code computes it: the same sum divided by `T` (the last task
    /// contributes a zero term). `None` for a single task.
    pub bwt_gem: Option<f64>,
    /// Forward transfer: `FWT = 1/(T-1) sum_{j>0} (R[j-1][j] - b[j])`. `None` for a single task.
    pub fwt: Option<f64>,
    /// Forgetting (Chaudhry et al. 2018): `1/(T-1) sum_{j<T-1} max_{l<T-1} (R[l][j] - R[T-1][j])`
    /// where the max runs over `l` in `j..T-1` (accuracy on `j` is only defined once it is learned).
    /// `None` for a single task.
    pub forgetting: Option<f64>,
    /// Learning accuracy of each task right after training on it: `R[j][j]`.
    pub learning_accuracy: Vec<f64>,
    /// Average accuracy after each training task `i`: `(1/(i+1)) sum_{j<=i} R[i][j]` (the curve
    /// of the SI paper's figures).
    pub acc_curve: Vec<f64>,
}

/// Computes every metric from a square accuracy matrix `r` (`T x T`) and the baseline `b` (`T`).
///
/// # Panics
/// When `r` is not `T x T` or `b` has not `T` entries (the training loop builds both).
pub fn compute(r: &[Vec<f64>], b: &[f64]) -> Metrics {
    let t = r.len();
    assert!(t > 0, "no tasks");
    assert!(r.iter().all(|row| row.len() == t), "R must be T x T");
    assert_eq!(b.len(), t, "b must have T entries");
    let last = &r[t - 1];
    let acc = last.iter().sum::<f64>() / t as f64;
    let learning_accuracy: Vec<f64> = (0..t).map(|j| r[j][j]).collect();
    let acc_curve = (0..t).map(|i| r[i][..=i].iter().sum::<f64>() / (i + 1) as f64).collect();
    let (bwt, bwt_gem, fwt, forgetting) = if t < 2 {
        (None, None, None, None)
    } else {
        let bwt_sum: f64 = (0..t - 1).map(|j| last[j] - r[j][j]).sum();
        let fwt = (1..t).map(|j| r[j - 1][j] - b[j]).sum::<f64>() / (t - 1) as f64;
        let forgetting =
            (0..t - 1).map(|j| (j..t - 1).map(|l| r[l][j]).fold(f64::NEG_INFINITY, f64::max) - last[j]).sum::<f64>()
                / (t - 1) as f64;
        (Some(bwt_sum / (t - 1) as f64), Some(bwt_sum / t as f64), Some(fwt), Some(forgetting))
    };
    Metrics { acc, bwt, bwt_gem, fwt, forgetting, learning_accuracy, acc_curve }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// A hand-computed 3-task example.
    #[test]
    fn metrics_match_hand_computation() {
        let r = vec![vec![0.9, 0.1, 0.2], vec![0.7, 0.95, 0.3], vec![0.6, 0.8, 0.99]];
        let b = vec![0.1, 0.15, 0.25];
        let m = compute(&r, &b);
        assert!(close(m.acc, (0.6 + 0.8 + 0.99) / 3.0));
        // BWT: ((0.6-0.9) + (0.8-0.95)) / 2
        assert!(close(m.bwt.unwrap(), (-0.3 - 0.15) / 2.0));
        assert!(close(m.bwt_gem.unwrap(), (-0.3 - 0.15) / 3.0));
        // FWT: ((0.1-0.15) + (0.3-0.25)) / 2
        assert!(close(m.fwt.unwrap(), 0.0));
        // forgetting: task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: max(0.95) - 0.8 = 0.15
        assert!(close(m.forgetting.unwrap(), 0.225));
        assert_eq!(m.learning_accuracy, vec![0.9, 0.95, 0.99]);
        assert!(close(m.acc_curve[1], (0.7 + 0.95) / 2.0));
    }

    /// Forgetting uses the best earlier accuracy, not the accuracy right after learning.
    #[test]
    fn forgetting_uses_the_maximum_over_earlier_rows() {
        let r = vec![vec![0.5, 0.0, 0.0], vec![0.9, 0.5, 0.0], vec![0.4, 0.5, 0.5]];
        let m = compute(&r, &[0.0; 3]);
        assert!(close(m.forgetting.unwrap(), ((0.9 - 0.4) + 0.0) / 2.0));
        assert!(close(m.bwt.unwrap(), ((0.4 - 0.5) + 0.0) / 2.0));
    }

    /// A single task has no transfer or forgetting.
    #[test]
    fn single_task_has_no_transfer() {
        let m = compute(&[vec![0.97]], &[0.1]);
        assert!(close(m.acc, 0.97));
        assert_eq!((m.bwt, m.fwt, m.forgetting), (None, None, None));
    }
}
