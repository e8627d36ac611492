"""Measurement commands: benchmarks, the soak and the accuracy evaluations on labelled clips.

Each module here is a command (``python -m app.eval.<name>``) that runs the app's real parts and
reports on them; nothing in the app imports this package (docs/architecture.md).
"""
