"""The engine: data, networks, training, per-sample curvature, the loss landscape, bounds and statistics.

General and reusable on any ``nn.Module``; it imports nothing from ``lhlib.chapters`` or
``lhlib.build``. The names a researcher starts from are exported by ``lhlib`` itself.
"""
