"""What a lesson may conclude from its runs. Two guards: no verdict from a model
that learned nothing (or from a quick run), and no "resolved" difference that
the spread over random seeds could produce by itself: Welch's t-test, with
Holm's correction when a lesson makes several comparisons."""
from dataclasses import asdict, dataclass

import numpy as np

LEARNED_FACTOR = 2.0     # a classifier has learned when its accuracy is at least twice chance
ALPHA = 0.05             # the chance, over all of a lesson's comparisons, of calling a mere spread resolved
# Welch's statistics need 3 values per variant: with equal spreads the test has 2(n − 1) degrees of
# freedom, and at 2 or fewer the t distribution it reads its quantiles from has no finite variance (its
# quantile at Holm's level over seven comparisons is 89 at 1 degree of freedom, 11.8 at 2, 5.1 at 4, 2.7 in
# the limit): a quick run's 2 seeds gave "smallest resolvable" differences of over 1000 points.
MIN_SEEDS = 3
QUICK_REASON = "No verdict: this is a quick run, a smoke test on synthetic data."
SAID = set()             # the reasons for "No verdict" this run gave already: each is said once (see verdict)


def learned(accuracies, chance=10.0):
    """True when every accuracy (%) is at least LEARNED_FACTOR × chance."""
    return all(a is not None and np.isfinite(a) and a >= LEARNED_FACTOR * chance for a in accuracies)


def verdict(text, accuracies, quick, chance=10.0):
    """``text`` where it may be said: never from a quick run (a smoke test), and
    only when every model the verdict rests on learned (accuracy at least twice
    chance); otherwise the reason there is none, once per run: a reason already
    given (or the quick run's banner, which says it) gives "" the next time."""
    if quick:
        reason = QUICK_REASON
    elif not learned(accuracies, chance):
        worst = min((a for a in accuracies if a is not None and np.isfinite(a)), default=float("nan"))
        reason = (f"No verdict: a model it rests on reached {worst:.1f}% accuracy, under "
                  f"{LEARNED_FACTOR * chance:.0f}% (twice chance), so it learned too little to compare.")
    else:
        return text
    if reason in SAID:
        return ""
    SAID.add(reason)
    return reason


@dataclass
class Comparison:
    """Mean of ``a`` minus mean of ``b`` over seeds, with Welch's 95 % interval and
    p-value; ``p_holm`` is the p-value after Holm's correction over the lesson's
    comparisons, ``resolved`` whether it is under ALPHA, and ``smallest`` the
    smallest difference these seeds' spread would have resolved."""
    a: str
    b: str
    difference: float
    low: float
    high: float
    p: float
    p_holm: float
    resolved: bool
    smallest: float
    seeds: int

    def as_dict(self):
        return asdict(self)


def error_margin(e1, e2, n, alpha=ALPHA):
    """Half-width, in points, of the (1 − alpha) interval of the difference of
    two error rates e1 and e2 (%) each measured on n test images, taken as
    independent samples. Measured on the same images (one network, two modes)
    the difference varies less than that, so a difference beyond the margin is
    resolved; one inside it is not, whichever way it points."""
    from scipy import stats
    p1, p2 = e1 / 100, e2 / 100
    return 100 * stats.norm.ppf(1 - alpha / 2) * np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)


def welch(x, y, alpha=ALPHA):
    """(difference of means, standard error, degrees of freedom, p-value) of
    Welch's two-sided t-test; no spread at all gives p 0 for a difference, 1 for none."""
    from scipy import stats
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"welch: needs at least 2 seeds per variant, got {len(x)} and {len(y)}")
    difference = x.mean() - y.mean()
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(vx + vy)
    if se == 0:
        return difference, 0.0, len(x) + len(y) - 2, float(difference == 0)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    p = stats.ttest_ind(x, y, equal_var=False).pvalue
    return difference, se, df, float(p)


def holm(pvalues):
    """Holm's step-down adjusted p-values (same order as given): the k-th smallest
    of m is multiplied by m − k + 1, and each is at least the one before it."""
    order = np.argsort(pvalues, kind="stable")
    m, adjusted, running = len(pvalues), [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def compare(samples, pairs, alpha=ALPHA):
    """One ``Comparison`` per pair (a, b) of keys of ``samples`` ({variant: values
    over seeds}), Holm-corrected together. A difference counts as resolved only
    when its adjusted p-value is under ``alpha``."""
    from scipy import stats
    tests = [welch(samples[a], samples[b]) for a, b in pairs]
    adjusted = holm([t[3] for t in tests])
    out = []
    for (a, b), (difference, se, df, p), p_holm in zip(pairs, tests, adjusted):
        half = stats.t.ppf(1 - alpha / 2, df) * se if se > 0 else 0.0
        # the difference these seeds resolve for certain: Holm's strictest level, alpha / m
        smallest = stats.t.ppf(1 - alpha / (2 * len(pairs)), df) * se if se > 0 else 0.0
        out.append(Comparison(a, b, float(difference), float(difference - half), float(difference + half),
                              p, float(p_holm), bool(p_holm < alpha), float(smallest),
                              min(len(samples[a]), len(samples[b]))))
    return out


def comparison_rows(comparisons, quick, accuracies=(), unit="seeds"):
    """Table rows (difference, 95 % interval, p, Holm's p, resolved?) for a lesson;
    a quick run, or one whose models did not learn, shows no resolved column values,
    and fewer than MIN_SEEDS values per variant no Welch statistics (see ``carried``)."""
    sure = not quick and learned(accuracies)
    return [[f"{c.a} − {c.b}", f"{c.difference:+.3g}", carried(c, f"[{c.low:+.3g}, {c.high:+.3g}]", unit),
             carried(c, p_value(c.p), unit), carried(c, p_value(c.p_holm), unit),
             ("yes" if c.resolved else "no") if sure and c.seeds >= MIN_SEEDS else "–"] for c in comparisons]


def carried(comparison, text, unit="seeds"):
    """``text``, a statistic of ``comparison``, where its values over seeds can carry
    it (at least MIN_SEEDS per variant); otherwise what it needs."""
    return text if comparison.seeds >= MIN_SEEDS else f"needs ≥ {MIN_SEEDS} {unit}"


def p_value(p):
    """0.034, or 3.1e-04 for a small one (never a bare 0.000)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


COMPARISON_HEADER = ["comparison", "difference", "95 % interval", "p (Welch)", "p (Holm)", "resolved?"]
