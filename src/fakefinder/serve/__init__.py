"""`fakefinder serve`: a local web app over the detector API — drop in a clip, see how likely it is fake and why.

The app is assembled from routers (`api` for programs and the page, `pages` for the page itself); the verdict work
is `jobs` (a bounded pool over the detector API), its HTML report `verdict_report`. Nothing is fetched
from the internet.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
