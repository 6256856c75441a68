"""The controls experiment's statistics: the paired t rule, its power, and the bootstrap over seeds.

* The rule (``report.paired_verdict``): over n paired seeds (same seed = same data order, same first
  batch, same evaluation draws), the differences d_s = arm_s - outcome_s of the primary metric; the
  two-sided (1 - alpha) confidence interval ``mean(d) +- t_{1-alpha/2, n-1} * sd(d) / sqrt(n)``; WIN when it
  lies above 0, LOSE when below, TIE otherwise.
* Its smallest detectable difference at power 1 - beta (the usual approximation, the t quantiles in place
  of the normal's): ``(t_{1-alpha/2, n-1} + t_{1-beta, n-1}) * sd(d) / sqrt(n)``.
* The share of the oracle's gain captured by an arm, ``(arm - outcome) / (oracle - outcome)`` of the
  seed means, with a percentile interval from resampling the seeds (paired: a resample draws whole seeds).

Pure Python (no scipy here): the t distribution's CDF by Simpson's rule on its density, its quantile by
bisection.

    python experiments/mig_vs_grpo/power.py --sd 0.05 --seeds 10
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Sequence


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df: expected at least 1 degree of freedom, got {df}")
    if x < 0:
        return 1.0 - t_cdf(-x, df)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(u: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(u * u / df))

    # substitute u = x * s, s in [0, 1]; the integrand is smooth, 2,000 Simpson panels are exact to ~1e-10
    panels = 2000
    width = 1.0 / panels
    total = density(0.0) + density(x)
    for index in range(1, panels):
        total += (4 if index % 2 else 2) * density(x * index * width)
    return 0.5 + x * width / 3 * total


def t_quantile(probability: float, df: int) -> float:
    """The x with P(T <= x) = ``probability``."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability: expected in (0, 1), got {probability}")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < probability else (low, middle)
    return (low + high) / 2


def minimum_detectable_difference(
    paired_sd: float, n_seeds: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The paired difference the two-sided paired t rule over ``n_seeds`` seeds detects with ``power``."""
    if n_seeds < 2:
        raise ValueError(f"n_seeds: the paired t rule needs at least 2 seeds, got {n_seeds}")
    df = n_seeds - 1
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * paired_sd / math.sqrt(n_seeds)


def seeds_for(paired_sd: float, difference: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """The fewest seeds whose minimum detectable difference is at most ``difference``."""
    n = 2
    while minimum_detectable_difference(paired_sd, n, alpha, power) > difference:
        n += 1
        if n > 10_000:
            raise ValueError(f"difference: {difference} is out of reach with sd {paired_sd}")
    return n


def paired_interval(differences: Sequence[float], alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided (1 - alpha) t interval of the mean paired difference."""
    if len(differences) < 2:
        raise ValueError("paired_interval needs at least 2 paired differences")
    mean = statistics.fmean(differences)
    half = t_quantile(1 - alpha / 2, len(differences) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(differences))
    return mean, mean - half, mean + half


def oracle_share(
    arm: dict[int, float],
    outcome: dict[int, float],
    oracle: dict[int, float],
    *,
    resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float] | None:
    """(share, low, high) of ``(arm - outcome) / (oracle - outcome)`` over the seeds all three hold
    (seed -> final accuracy), the interval the percentile bootstrap over seeds; None with < 2 common seeds.
    Resamples whose oracle gain is 0 are dropped (the share is undefined there)."""
    seeds = sorted(set(arm) & set(outcome) & set(oracle))
    if len(seeds) < 2:
        return None

    def share(sample: Sequence[int]) -> float | None:
        gain = statistics.fmean(oracle[s] - outcome[s] for s in sample)
        if gain == 0:
            return None
        return statistics.fmean(arm[s] - outcome[s] for s in sample) / gain

    point = share(seeds)
    if point is None:
        return None
    rng = random.Random(seed)
    shares = sorted(
        value for _ in range(resamples) if (value := share(rng.choices(seeds, k=len(seeds)))) is not None
    )
    low = shares[math.floor(alpha / 2 * (len(shares) - 1))]
    high = shares[math.ceil((1 - alpha / 2) * (len(shares) - 1))]
    return point, low, high


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sd", type=float, required=True, help="sd of a paired difference over seeds")
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    args = parser.parse_args(argv)
    mdd = minimum_detectable_difference(args.sd, args.seeds, args.alpha, args.power)
    print(f"minimum detectable difference: {mdd:.4f}")


if __name__ == "__main__":
    main()
