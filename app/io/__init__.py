"""Frame sources (cameras, files, stills, playlists) and the recording writer."""
from app.io.capture import Source, SourceError, list_cameras, open_source
from app.io.writer import OutputError, VideoWriter

__all__ = ["Source", "SourceError", "list_cameras", "open_source", "OutputError", "VideoWriter"]
