"""The engine: data, networks, training, per-sample curvature, the loss landscape, bounds and statistics.

General and reusable on any ``nn.Module``; it imports nothing from :mod:`lhlib.chapters` or
:mod:`lhlib.build`. The names a researcher starts from are exported by :mod:`lhlib` itself.
"""
