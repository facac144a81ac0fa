"""A model's files as they are read: from a model folder, or from the members of a package (.zip) written by
``sparseseg export``. Every file's unpacked size is capped before it is read, so that a crafted package cannot fill
the memory (a zip member that unpacks to gigabytes is refused unread)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from sparseseg.errors import InputError

#: The model's own config file, in a folder and in a package.
CONFIG = "config.json"


class ModelFiles:
    """A model's files as they are read: from a folder, or from the members of a package (.zip); every file's
    unpacked size is capped before it is read."""

    def __init__(self, path: Path):
        self.path, self.package = path, path.is_file()
        if self.package and not path.name.lower().endswith(".zip"):
            raise InputError(
                f"'{path}': no such model folder, and not a bioimage.io package (.zip) from sparseseg export"
            )
        if not self.package and not path.is_dir():
            raise InputError(f"'{path}': no such model folder")
        self._listing = self._members() if self.package else None
        if not self.exists(CONFIG):
            what = "a package written by sparseseg export" if self.package else "a sparseseg model folder"
            raise InputError(f"'{path}': not {what} (no {CONFIG})")

    def label(self, name: str) -> str:
        """The file as a message shows it, quoted."""
        return f"'{self.path / name}'"

    def _members(self) -> dict[str, zipfile.ZipInfo]:
        try:
            with zipfile.ZipFile(self.path) as archive:
                return {info.filename: info for info in archive.infolist()}
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"'{self.path}': cannot read the package ({exc})") from None

    def exists(self, name: str) -> bool:
        return name in self._listing if self.package else (self.path / name).is_file()

    def read(self, name: str, cap: int) -> bytes:
        """The file's bytes; an `InputError` where it is missing or would unpack to more than ``cap`` bytes."""
        if not self.exists(name):
            raise InputError(f"{self.label(name)}: no such file")
        size = self._listing[name].file_size if self.package else (self.path / name).stat().st_size
        if size > cap:
            raise InputError(
                f"{self.label(name)}: {size} bytes, more than the {cap} that such a file can hold; not read"
            )
        try:
            if not self.package:
                return (self.path / name).read_bytes()
            with zipfile.ZipFile(self.path) as archive, archive.open(name) as member:
                data = member.read(cap + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InputError(f"{self.label(name)}: cannot read it ({exc})") from None
        if len(data) > cap:
            raise InputError(f"{self.label(name)}: unpacks to more than {cap} bytes; not read")
        return data
