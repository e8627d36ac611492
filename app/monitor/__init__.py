"""Driver monitoring: pure rules (core), settings + CLI flags, JSONL event log, alert sound.

See docs/driver-monitoring.md for each rule, its default and its source.
"""
from app.monitor.core import KINDS, DriverMonitor, select_driver
from app.monitor.events import EventLog, read_events
from app.monitor.settings import MonitorSettings, add_monitor_args, settings_from_args
from app.monitor.sound import AlertSound

__all__ = ["DriverMonitor", "select_driver", "KINDS", "MonitorSettings", "add_monitor_args",
           "settings_from_args", "EventLog", "read_events", "AlertSound"]
