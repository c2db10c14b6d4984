"""Measurement: static counts, timing and memory, and the combined :func:`profile`."""

from prunekit.measure.counts import (CONVENTIONS, count_macs, count_nonzero_parameters, count_ops, count_parameters,
                                     serialized_size)
from prunekit.measure.profile import Profile, profile
from prunekit.measure.timing import (MachineLoad, Ratio, Timing, machine_load, paired_ratio, peak_inference_memory,
                                     time_inference, time_interleaved)

__all__ = ["CONVENTIONS", "MachineLoad", "Profile", "Ratio", "Timing", "count_macs", "count_nonzero_parameters",
           "count_ops", "count_parameters", "machine_load", "paired_ratio", "peak_inference_memory", "profile",
           "serialized_size", "time_inference", "time_interleaved"]
