"""Measurement: static counts, timing and memory, and the combined :func:`profile`."""

from prunekit.measure.counts import (CONVENTIONS, count_macs, count_nonzero_parameters, count_ops, count_parameters,
                                     serialized_size)
from prunekit.measure.profile import Profile, profile
from prunekit.measure.timing import Timing, peak_inference_memory, time_inference

__all__ = ["CONVENTIONS", "Profile", "Timing", "count_macs", "count_ops", "count_nonzero_parameters", "count_parameters",
           "peak_inference_memory", "profile", "serialized_size", "time_inference"]
