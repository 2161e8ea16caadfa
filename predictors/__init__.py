"""Latency and accuracy predictors. Every predictor has ``predict(archs) -> np.ndarray`` over a batch."""
