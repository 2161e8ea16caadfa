"""The plain lookup-table predictor: a subnet's latency is the sum of its operators' latencies."""
from __future__ import annotations

import numpy as np

from device_profiles import Profile, load_profile
from ofa_core.space import as_batch

from .base import Archs


class LUTPredictor:
    """Vectorized LUT sum over a device profile (milliseconds)."""

    def __init__(self, profile: Profile | str):
        self.profile = load_profile(profile) if isinstance(profile, str) else profile

    def predict(self, archs: Archs) -> np.ndarray:
        return self.profile.table().evaluate(as_batch(archs))
