"""The user's own table file (`load.path`), read the same way by every family that takes one.

It imports no family and no other mlaas module but errors, so a family module and the family
registry (`mlaas.families`, which takes `TABLE_SUFFIXES` from here) can both import it.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import TYPE_CHECKING

from mlaas.core.errors import DataError, SettingsError

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
"""The files a table family reads (`load.path`)."""
# The first bytes of files people point a table setting at by mistake, and what they are.
FILE_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a zip archive (an .xlsx workbook is one)",
    b"\xd0\xcf\x11\xe0": "an old Office document (.xls)",
    b"PAR1": "a parquet file",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
}
_SNIFF_BYTES = 64 * 1024


def check_text_file(path: Path) -> None:
    """Refuse, with a message naming the file, what a CSV reader would choke on: an empty file,
    a known binary format under a text suffix, NUL bytes, text that is not UTF-8."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head.strip():
        raise DataError(f"load.path: {path} is empty; it needs a header row and data rows")
    for signature, kind in FILE_SIGNATURES.items():
        if head.startswith(signature):
            raise DataError(
                f"load.path: {path} is {kind}, not a {path.suffix} text table; export or "
                "convert it to CSV (or parquet) first"
            )
    if b"\x00" in head:
        raise DataError(f"load.path: {path} holds binary data (NUL bytes), not a text table")
    try:
        # Incremental: a character cut at the end of the sample is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise DataError(
            f"load.path: {path} is not UTF-8 text (byte {error.start} of the file); "
            "save it as UTF-8 CSV"
        ) from None


def read_user_table(path: Path) -> pd.DataFrame:
    """The user's CSV / TSV / parquet file, or a DataError naming the file and what is wrong."""
    # Imported here: the settings check imports this module (for TABLE_SUFFIXES) and must stay
    # a fraction of a second; pandas alone takes about half of one.
    import pandas as pd
    import pyarrow as pa

    if not path.is_file():
        raise SettingsError(f"load.path: {path} is not a file; point it at a CSV or parquet file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"load.path: {path} is a {suffix or 'suffix-less'} file; mlaas reads "
            f"{', '.join(TABLE_SUFFIXES)} files: export it as CSV"
        )
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            check_text_file(path)
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"load.path: {path} could not be read as a table: {reason}") from None
    if frame.empty:
        raise DataError(
            f"load.path: {path} has no data rows (columns: {list(frame.columns)}); "
            "it needs a header row and data rows"
        )
    return frame
