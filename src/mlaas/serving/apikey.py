"""The served endpoint's optional API key: where it comes from, and what a valid one looks like.

Kept free of BentoML imports: `mlaas serve` checks the key before it starts any worker, and the
service reads it again in each worker, when it starts, never when the Bento is built, so the key
never lands in the Bento or its metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mlaas.core.errors import SettingsError

API_KEY_ENV = "MLAAS_API_KEY"
API_KEY_FILE_ENV = "MLAAS_API_KEY_FILE"


def read_api_key(environ: Mapping[str, str]) -> bytes | None:
    """The key from `MLAAS_API_KEY` or the file `MLAAS_API_KEY_FILE` names (its trailing newline
    dropped); None when neither is set: the endpoints are open."""
    if API_KEY_ENV in environ and API_KEY_FILE_ENV in environ:
        raise SettingsError(f"set {API_KEY_ENV} or {API_KEY_FILE_ENV}, not both")
    if API_KEY_FILE_ENV in environ:
        where = f"{API_KEY_FILE_ENV} ({environ[API_KEY_FILE_ENV]})"
        try:
            key = Path(environ[API_KEY_FILE_ENV]).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"cannot read the API key file {where}: {error}") from None
    elif API_KEY_ENV in environ:
        where, key = API_KEY_ENV, environ[API_KEY_ENV]
    else:
        return None
    # A key no header can carry would lock every client out; an empty one is a mistake.
    if not key or not key.isascii() or not key.isprintable() or " " in key:
        raise SettingsError(
            f"the API key in {where} is empty or holds spaces or characters other than printable "
            "ASCII: use a long random token, e.g. `openssl rand -hex 32`"
        )
    return key.encode("ascii")
