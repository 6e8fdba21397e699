//! From real-valued targets to integer unit counts that prune exactly the uniform count: a small
//! dynamic program over the counts' offsets from the rounded targets (docs/math.md, "Sparsity
//! allocation").

/// One layer's integer frame: weights per unit, its uniform count and its bounds, in units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Frame {
    pub(crate) group: u64,
    pub(crate) steps: u64,
    pub(crate) uniform: u64,
    pub(crate) lo: u64,
    pub(crate) hi: u64,
}

/// Largest DP table (layers × offsets) tried.
const MAX_CELLS: u64 = 100_000_000;

/// Offsets from the rounded targets tried, widest last.
const WINDOWS: [i64; 3] = [2, 8, 64];

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Counts `k_l ∈ [lo_l, hi_l]` with `Σ group_l·k_l = Σ group_l·uniform_l` exactly, of the lowest
/// `Σ cost(l, k_l)` among those within a window of offsets around the rounded-down targets (the
/// window widened until one fits); failing every window, the best within ±2 units of the uniform
/// counts, which always fits.
pub(crate) fn exact_counts(frames: &[Frame], targets: &[f64], cost: &dyn Fn(usize, u64) -> f64) -> Vec<u64> {
    let base: Vec<u64> = frames
        .iter()
        .zip(targets)
        .map(|(f, &t)| {
            let floor = if t.is_finite() && t > 0.0 { t.floor() as u64 } else { 0 };
            floor.clamp(f.lo, f.hi)
        })
        .collect();
    for window in WINDOWS {
        if let Some(counts) = best_in_window(frames, &base, window, cost) {
            return counts;
        }
    }
    let uniform: Vec<u64> = frames.iter().map(|f| f.uniform).collect();
    best_in_window(frames, &uniform, WINDOWS[0], cost).unwrap_or(uniform)
}

/// The DP over offsets `δ_l ∈ [−window, window]` (within the bounds) from `base`; `None` when no
/// offsets reach the exact count or the table would be too large.
#[allow(clippy::indexing_slicing)] // Every state index is offset into the table's checked range.
fn best_in_window(frames: &[Frame], base: &[u64], window: i64, cost: &dyn Fn(usize, u64) -> f64) -> Option<Vec<u64>> {
    let g = frames.iter().fold(0, |acc, f| gcd(acc, f.group)).max(1);
    let want: i128 = frames.iter().map(|f| i128::from(f.group) * i128::from(f.uniform)).sum();
    let have: i128 = frames.iter().zip(base).map(|(f, &b)| i128::from(f.group) * i128::from(b)).sum();
    let residual = want - have;
    if residual % i128::from(g) != 0 {
        return None;
    }
    let r = i64::try_from(residual / i128::from(g)).ok()?;
    let ranges: Vec<(i64, i64, i64)> = frames
        .iter()
        .zip(base)
        .map(|(f, &b)| {
            let (b, lo, hi) = (b as i64, f.lo as i64, f.hi as i64);
            ((lo - b).max(-window), (hi - b).min(window), (f.group / g) as i64)
        })
        .collect();
    let smin: i64 = ranges.iter().map(|&(d, _, w)| d * w).sum();
    let smax: i64 = ranges.iter().map(|&(_, d, w)| d * w).sum();
    if r < smin || r > smax {
        return None;
    }
    let size = usize::try_from(smax - smin + 1).ok()?;
    if (size as u64).saturating_mul(frames.len() as u64) > MAX_CELLS {
        return None;
    }
    let mut best = vec![f64::INFINITY; size];
    let mut next = vec![f64::INFINITY; size];
    let mut choice = vec![0i8; size * frames.len()];
    let index = |s: i64| (s - smin) as usize;
    best[index(0)] = 0.0;
    let (mut lo_sum, mut hi_sum) = (0i64, 0i64);
    for (l, &(dlo, dhi, w)) in ranges.iter().enumerate() {
        next.iter_mut().for_each(|v| *v = f64::INFINITY);
        let costs: Vec<(i64, f64)> = (dlo..=dhi).map(|d| (d, cost(l, (base[l] as i64 + d) as u64))).collect();
        for s in lo_sum..=hi_sum {
            let here = best[index(s)];
            if !here.is_finite() {
                continue;
            }
            for &(d, c) in &costs {
                let t = index(s + d * w);
                let total = here + c;
                if total < next[t] {
                    next[t] = total;
                    choice[l * size + t] = d as i8;
                }
            }
        }
        std::mem::swap(&mut best, &mut next);
        lo_sum += dlo * w;
        hi_sum += dhi * w;
    }
    if !best[index(r)].is_finite() {
        return None;
    }
    let mut counts = base.to_vec();
    let mut s = r;
    for l in (0..frames.len()).rev() {
        let d = i64::from(choice[l * size + index(s)]);
        counts[l] = (base[l] as i64 + d) as u64;
        s -= d * ranges[l].2;
    }
    Some(counts)
}
