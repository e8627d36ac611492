"""Real-time 3D face analysis and driver monitoring."""
__version__ = "0.1.0"
