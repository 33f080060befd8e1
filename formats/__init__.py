"""Data file formats: the files a pipeline reads where they live, as the tf.Examples its ExampleGen makes of them.

`data.format` names one: `tfrecord` (tf.Example TFRecords, gzip or plain), `parquet`,
`csv` (a header row). Each is one module of this package defining `FORMAT`, a
`DataFormat`, found by its name (no list to edit). In the pipeline each format is read
by TFX's ExampleGen for it (pipeline/pipeline.py: ImportExampleGen, FileBasedExampleGen
with components/parquet_example_gen.py, CsvExampleGen). Everything that reads the same
files outside the pipeline goes through the format's `examples`, which converts exactly
as that ExampleGen does: the preflight (pipeline/inputs.py), `init`, `validate`, skew
and drift, batch scoring. So each of them sees the rows training will see, and a file
that cannot be read is named, in one line, before any component runs.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from contract.errors import BadInputError

ATTRIBUTE = "FORMAT"
# Files up to this size are read whole by a check (the bundled shards are ~100 KB); larger ones only their head:
# a whole read would cost a pass over the data in one Python process, and Beam reads large inputs in parallel.
FULL_CHECK_BYTES = 64 << 20
HEAD_CHECK_BYTES = 1 << 20


class DataFormat:
    """One file format. Subclasses set `name` and `what` and implement `sniff`, `check` and `examples`."""

    name = ""
    what = ""  # how a person names a file of the format, for messages ("Parquet file")
    type_hint = ""  # what to do when a column's type differs between files, where the format itself causes it

    def columns(self, path: str) -> Optional[List[str]]:
        """The column names the file declares (a header, a schema); None for a format of self-describing rows."""
        return None

    def sniff(self, path: str) -> bool:
        """True when the file's first bytes (or its name) say it is of this format."""
        raise NotImplementedError

    def check(self, path: str) -> None:
        """Raises BadInputError, one line naming the file and what to do, when it cannot be read as this format."""
        raise NotImplementedError

    def examples(self, paths: Sequence[str], head_bytes: int = 0) -> Iterator[Tuple[str, List[bytes]]]:
        """(file, its rows as serialized tf.Examples) per file, converted as this format's ExampleGen converts them;
        with `head_bytes`, only the rows within about that many bytes of each file.

        `paths` is one unit of ExampleGen's work (a split of one span): CSV column types are inferred over it.
        """
        raise NotImplementedError

    def checked_examples(self, paths: Sequence[str], full_check_bytes: int = FULL_CHECK_BYTES
                         ) -> Iterator[Tuple[str, List[bytes]]]:
        """`examples` of files checked first: small files whole, large ones their head."""
        for path in paths:
            self.check(path)
        small = [p for p in paths if _size(p) <= full_check_bytes]
        large = [p for p in paths if _size(p) > full_check_bytes]
        yield from self.examples(small)
        if large:
            yield from self.examples(large, head_bytes=HEAD_CHECK_BYTES)


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def _discover() -> Dict[str, DataFormat]:
    found = {}
    for module in pkgutil.iter_modules(__path__):
        data_format = getattr(importlib.import_module(f"{__name__}.{module.name}"), ATTRIBUTE, None)
        if isinstance(data_format, DataFormat):
            found[data_format.name] = data_format
    return found


_FORMATS: Dict[str, DataFormat] = {}


def names() -> List[str]:
    if not _FORMATS:
        _FORMATS.update(_discover())
    return sorted(_FORMATS)


def get(name: str) -> DataFormat:
    """The format `data.format` names; a BadInputError naming the known ones otherwise."""
    if name not in names():
        raise BadInputError(f"data.format: {name!r} is not a data format; one of {', '.join(names())}")
    return _FORMATS[name]


def detect(files: Sequence[str]) -> DataFormat:
    """The one format every file is in, told by content (Parquet's magic bytes), by name (`.csv`), else TFRecord
    (whose own check names a file that is none of them); a mix is a BadInputError."""
    found: Dict[str, List[str]] = {}
    for path in files:
        found.setdefault(next(name for name in names() if _FORMATS[name].sniff(path)), []).append(path)
    if len(found) > 1:
        described = "; ".join(f"{name}: {paths[0]}" + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
                              for name, paths in sorted(found.items()))
        raise BadInputError(f"the files mix formats ({described}); a dataset is one format: pass a pattern that "
                            "picks one")
    return _FORMATS[next(iter(found))]


def read_all(data_format: DataFormat, paths: Sequence[str]) -> List[bytes]:
    """Every row of `paths` (one unit), each file checked first, as serialized tf.Examples."""
    for path in paths:
        data_format.check(path)
    return [record for _, records in data_format.examples(paths) for record in records]
