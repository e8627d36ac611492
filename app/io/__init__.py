"""Frame sources (app.io.capture), the recording writer (app.io.writer), the JSON-lines / atomic
output files (app.io.files) and the alert sound (app.io.sound); import each by its module (this package imports nothing, so the
monitor's event log can use app.io.files without loading the video stack)."""
