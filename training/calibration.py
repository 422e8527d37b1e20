"""Temperature scaling (Guo et al., 2017): one scalar T fitted on validation logits.

Dividing logits by T changes no prediction, only how confident the probabilities are, so it
is safe to fit after early stopping picked the model.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising validation negative log-likelihood (searched on log T)."""

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    result = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(result.x))
