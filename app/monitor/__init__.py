"""Driver monitoring: pure rules (core, states), settings (their flags: app/cli.py), the JSONL event log.
The alert sound, an audio adapter, is app/io/sound.py.

See docs/driver-monitoring.md for each rule, its default and its source.
"""
from app.monitor.core import KINDS, DriverMonitor, select_driver
from app.monitor.events import EventLog, read_events
from app.monitor.settings import MonitorSettings

__all__ = ["DriverMonitor", "select_driver", "KINDS", "MonitorSettings", "EventLog", "read_events"]
