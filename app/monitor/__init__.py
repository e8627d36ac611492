"""Driver monitoring: pure rules (core), settings (their flags: app/cli.py), JSONL event log, alert sound.

See docs/driver-monitoring.md for each rule, its default and its source.
"""
from app.monitor.core import KINDS, DriverMonitor, select_driver
from app.monitor.events import EventLog, read_events
from app.monitor.settings import MonitorSettings
from app.monitor.sound import AlertSound

__all__ = ["DriverMonitor", "select_driver", "KINDS", "MonitorSettings", "EventLog", "read_events",
           "AlertSound"]
