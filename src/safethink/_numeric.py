"""Small numerical fits shared by the judges and the probes."""

from __future__ import annotations

from typing import Any


def fit_logistic(x: Any, y: Any, *, c: float, max_iter: int, sample_weight: Any = None) -> Any:
    """A scikit-learn L2 logistic regression fitted with BLAS on one thread.

    The fits here are small (about a thousand rows of a few hundred features), where a multi-threaded BLAS
    spends its time waiting on threads, the more so next to PyTorch's own worker threads: on 2 cores one
    probe-layer fit took 0.49 s with the default threads and 0.016 s with one, the same solver to the same
    solution (BENCHMARKS.md, "Probe fitting"). Raises ImportError without scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return LogisticRegression(C=c, max_iter=max_iter).fit(x, y, sample_weight=sample_weight)
