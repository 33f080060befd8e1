"""CSV files with a header row (a warehouse export), read as TFX's CsvExampleGen reads them.

CsvExampleGen has no schema: it infers each column's type from the cells of one split
(of one span) at a time, with tfx_bsl's `ColumnTypeInferrer`: every non-empty cell an
integer -> INT, numbers with a fraction -> FLOAT, anything else -> BYTES; an empty cell
is a feature with no value. Here the same TFX and tfx_bsl functions run on the same
unit (`examples(paths)` = the files of one split of one span), so the preflight, `init`
and the validation commands see exactly the types and values CsvExampleGen will write.
Two consequences a CSV producer must know (docs/data-formats.md):
- a float column whose cells in one span are all whole numbers ("0", "12") is INT in that
  span; when it is FLOAT in another, the preflight names both files (write "0.0");
- every file of a split needs the same header (CsvExampleGen compares them; the header
  line is split on commas without quoting, as TFX reads it). Plain text only: TFX reads
  the header without decompressing, so `.csv.gz` is not a CSV file here.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

from contract.errors import BadInputError
from formats import DataFormat

SUFFIX = ".csv"


def header(path: str) -> List[str]:
    """The column names, as CsvExampleGen reads them (TFX's `io_utils.load_csv_column_names`)."""
    import os

    from tfx.utils import io_utils

    if os.path.getsize(path) == 0:
        raise BadInputError(f"{path}: the file is empty (no header row); remove it or re-export it with its header")
    return io_utils.load_csv_column_names(path)


def _lines(path: str, head_bytes: int = 0) -> Iterator[str]:
    """The file's records after the header (quoted line breaks joined), as CsvExampleGen's reader yields them."""
    from tfx.components.example_gen.csv_example_gen.executor import _ReadCsvRecordsFromTextFile

    read = 0
    try:
        for line in _ReadCsvRecordsFromTextFile().process(path):
            yield line
            read += len(line)
            if head_bytes and read >= head_bytes:
                return
    except (ValueError, UnicodeDecodeError) as error:
        raise BadInputError(f"{path}: not readable as CSV ({str(error).splitlines()[0]}); fix the quoting or the "
                            "encoding (UTF-8) and re-export it") from None


class Csv(DataFormat):
    name = "csv"
    what = "CSV file"
    type_hint = "in CSV a column whose cells in one split of a span are all whole numbers is read as integers: " \
                "write floats with a decimal point (1.0) in every file"

    def columns(self, path: str) -> List[str]:
        return header(path)

    def sniff(self, path: str) -> bool:
        return path.endswith(SUFFIX)

    def check(self, path: str) -> None:
        header(path)

    def examples(self, paths: Sequence[str], head_bytes: int = 0) -> Iterator[Tuple[str, List[bytes]]]:
        from tfx.components.example_gen.csv_example_gen.executor import _ParsedCsvToTfExample
        from tfx_bsl.coders import csv_decoder

        paths = list(paths)
        if not paths:
            return
        names = header(paths[0])
        for path in paths[1:]:
            other = header(path)
            if other != names:
                missing = [c for c in names if c not in other]
                extra = [c for c in other if c not in names]
                what = "; ".join(part for part in (f"it lacks {missing}" if missing else "",
                                                   f"it adds {extra}" if extra else "") if part) or \
                    "the same columns in another order"
                raise BadInputError(f"{path}: its header differs from {paths[0]} ({what}); every CSV file of a split "
                                    "needs the same columns in the same order: re-export it with the split's header")
        parser = csv_decoder.ParseCSVLine(delimiter=",")
        parser.setup()
        parsed = {}
        for path in paths:
            rows = []
            for number, line in enumerate(_lines(path, head_bytes), start=2):
                cells = next(iter(parser.process(line)))[0]
                if cells and len(cells) != len(names):
                    raise BadInputError(f"{path}: record {number - 1} (after the header) has {len(cells)} cells, "
                                        f"the header {len(names)} columns; fix the row or its quoting")
                rows.append(cells)
            parsed[path] = rows
        inferrer = csv_decoder.ColumnTypeInferrer(names, skip_blank_lines=True)
        accumulator = inferrer.create_accumulator()
        for rows in parsed.values():
            for cells in rows:
                accumulator = inferrer.add_input(accumulator, cells)
        columns = inferrer.extract_output(accumulator)
        for path, rows in parsed.items():
            convert = _ParsedCsvToTfExample()
            yield path, [example.SerializeToString() for cells in rows for example in convert.process(cells, columns)]


FORMAT = Csv()
