"""Load generator and benchmark suite for the gateway and the origin-design baseline.

Run `python -m bench --help`. Results go to `bench/results/<timestamp>/`.
"""

from __future__ import annotations
