"""``ppdgm.svi``, the public name of :mod:`ppdgm.infer.svi`: the SVI objectives of ``fit``."""

from ppdgm.infer.svi import LOSSES, SlowRoadWarning, SVIObjective

__all__ = ["LOSSES", "SVIObjective", "SlowRoadWarning"]
