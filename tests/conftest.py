"""Make tests/ importable (``import workload``) and set hypothesis up for noisy machines."""

import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Timing belongs in benchmarks, not in tests: no per-example deadline on
# shared, noisy machines (and under emulation in the v2 VM).
settings.register_profile("cgstats", deadline=None)
settings.load_profile("cgstats")
