"""File sources and sinks: JSON lines, CSV and msgpack files; a JSON-lines file sink.

``bspump.file.FileJSONLinesSource`` and the others are defined in :mod:`.source`,
:mod:`.csvsource` and :mod:`.sink`, and named here, as a config names them
(``source = bspump.file:FileJSONLinesSource``).
"""

from bspump.file.csvsource import FileCSVSource
from bspump.file.sink import FileJSONLinesSink
from bspump.file.source import FileJSONLinesSource, FileMsgpackSource

__all__ = ["FileCSVSource", "FileJSONLinesSink", "FileJSONLinesSource", "FileMsgpackSource"]
