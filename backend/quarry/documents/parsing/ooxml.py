"""Safety checks on Word files before anything unpacks or parses them.

A .docx is a ZIP of XML parts, which makes it a convenient carrier for two classic attacks:
the zip bomb (a few kilobytes that expand to gigabytes, or a central directory of hundreds
of thousands of entries that costs memory just to list) and the XML external entity (a
DOCTYPE that asks the parser to read /etc/passwd or a URL into the text). Word never writes
a DOCTYPE — ECMA-376 forbids them — so any part declaring one is refused outright, whatever
python-docx's parser would have made of it.
"""

from __future__ import annotations

import codecs
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from quarry.documents.parsing.model import DocumentParseError

#: A Word document holds a few dozen parts, a few thousand with many embedded images.
MAX_ZIP_ENTRIES = 10_000
#: Listing a central directory costs about ten times its size in memory.
MAX_CENTRAL_DIRECTORY_BYTES = 4 * 1024 * 1024
#: XML compresses about 10:1 and images barely; past 100:1 on a big part it is a bomb.
MAX_COMPRESSION_RATIO = 100
#: Small parts (an empty header, a run of blank styles) may compress further harmlessly.
RATIO_CHECKED_FROM_BYTES = 4 * 1024 * 1024
#: How much of an XML part is read to find its root element (past its declarations).
_PROLOG_LIMIT_CHARS = 64 * 1024
_READ_SIZE = 16 * 1024

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ENCRYPTED_REASON = (
    "The Word document is password-protected (encrypted); remove the password in Word "
    "(or save an unprotected copy) and upload it again."
)
DTD_REASON = (
    "The Word document contains a document type declaration (DTD), which Word never writes "
    "and which can make a parser read other files; Quarry does not open it."
)

# End of central directory record, and its ZIP64 locator and record (APPNOTE 4.3.14-16).
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF


@dataclass(frozen=True)
class ZipDirectory:
    """What a ZIP's end record says about its central directory."""

    entries: int
    size: int

    @property
    def is_oversized(self) -> bool:
        return self.entries > MAX_ZIP_ENTRIES or self.size > MAX_CENTRAL_DIRECTORY_BYTES


def read_zip_directory(path: Path) -> ZipDirectory | None:
    """The entry count and central directory size of the ZIP at `path`, from its end record.

    Reads at most 64 KiB and builds nothing per entry, unlike `zipfile.ZipFile`, which lists
    every entry as it opens. None when there is no end record (`zipfile` will then say the
    file is damaged).
    """
    with path.open("rb") as file:
        file_size = file.seek(0, 2)
        tail_size = min(file_size, _EOCD.size + _MAX_COMMENT)
        file.seek(file_size - tail_size)
        tail = file.read(tail_size)
        at = tail.rfind(_EOCD_SIGNATURE)
        if at < 0 or at + _EOCD.size > len(tail):
            return None
        _, _, _, _, entries, size, offset, _ = _EOCD.unpack_from(tail, at)
        if entries != 0xFFFF and size != 0xFFFFFFFF and offset != 0xFFFFFFFF:
            return ZipDirectory(entries, size)
        # ZIP64: the real numbers are in a record the locator points at. One we cannot
        # read is taken at the 16-bit maximum, which is over the limit anyway.
        locator_at = at - _ZIP64_LOCATOR.size
        if locator_at >= 0 and tail.startswith(_ZIP64_LOCATOR_SIGNATURE, locator_at):
            _, _, record_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
            if record_offset < file_size:
                file.seek(record_offset)
                record = file.read(_ZIP64_EOCD.size)
                if len(record) == _ZIP64_EOCD.size and record.startswith(_ZIP64_EOCD_SIGNATURE):
                    fields = _ZIP64_EOCD.unpack(record)
                    return ZipDirectory(entries=fields[7], size=fields[8])
        return ZipDirectory(entries=max(entries, MAX_ZIP_ENTRIES + 1), size=size)


def check_docx_package(path: Path, max_expanded_bytes: int) -> None:
    """Refuse a .docx that is encrypted, a zip bomb, or carries a DTD in an XML part.

    Reads the central directory (after checking its size) and the first bytes of each part,
    decompressing nothing else. `max_expanded_bytes` bounds the sum of the parts' sizes:
    python-docx loads every part into memory. Raises `DocumentParseError` with the reason.
    """
    with path.open("rb") as file:
        if file.read(len(OLE2_MAGIC)) == OLE2_MAGIC:
            # Office saves a password-protected .docx as an OLE2 container, not a ZIP.
            raise DocumentParseError(ENCRYPTED_REASON)
    directory = read_zip_directory(path)
    if directory is not None and directory.is_oversized:
        raise DocumentParseError(too_many_entries_reason(directory))
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            _check_sizes(entries, max_expanded_bytes)
            for entry in entries:
                if not entry.is_dir() and _declares_dtd(archive, entry):
                    raise DocumentParseError(DTD_REASON)
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted entry; NotImplementedError: an exotic compression.
        raise DocumentParseError(
            "The Word document is damaged or incomplete; try saving or downloading it again."
        ) from exc


def too_many_entries_reason(directory: ZipDirectory, subject: str = "The file") -> str:
    return (
        f"{subject} is a ZIP archive of {directory.entries:,} entries, far more than a Word "
        "document holds; it cannot be opened safely."
    )


def _check_sizes(entries: list[zipfile.ZipInfo], max_expanded_bytes: int) -> None:
    if len(entries) > MAX_ZIP_ENTRIES:
        raise DocumentParseError(too_many_entries_reason(ZipDirectory(len(entries), 0)))
    # zipfile never inflates an entry past its declared size (it fails the CRC instead),
    # so the declared sizes bound what opening the document can cost.
    expanded = sum(entry.file_size for entry in entries)
    if expanded > max_expanded_bytes:
        raise DocumentParseError(
            f"The Word document would expand to {_size(expanded)} when opened, more than "
            f"the {_size(max_expanded_bytes)} Quarry unpacks; it may be a zip bomb."
        )
    for entry in entries:
        ratio_exceeded = entry.file_size > entry.compress_size * MAX_COMPRESSION_RATIO
        if entry.file_size >= RATIO_CHECKED_FROM_BYTES and ratio_exceeded:
            raise DocumentParseError(
                f"The Word document's part {entry.filename[:100]!r} is compressed more than "
                f"{MAX_COMPRESSION_RATIO} to 1 ({_size(entry.compress_size)} expanding to "
                f"{_size(entry.file_size)}), as only zip bombs are; Quarry does not open it."
            )


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:,.0f} KB"
    return f"{size / (1024 * 1024):,.1f} MB"


def _declares_dtd(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bool:
    """Whether the part is XML whose prolog holds a DOCTYPE (or any other `<!` declaration).

    Parts that are not XML (images, fonts, embedded objects) are recognised by their first
    bytes and skipped. A part named like XML that cannot be read as XML is refused too.
    """
    with archive.open(entry) as part:
        head = part.read(_READ_SIZE)
        encoding = _xml_encoding(head)
        if encoding is None:
            if not entry.filename.lower().endswith((".xml", ".rels")):
                return False
            encoding = "utf-8"
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        text = decoder.decode(head)
        while True:
            verdict = _prolog_verdict(text, final=len(text) >= _PROLOG_LIMIT_CHARS)
            if verdict is not None:
                return verdict
            more = part.read(_READ_SIZE)
            if not more:
                return bool(_prolog_verdict(text + decoder.decode(b"", final=True), final=True))
            text += decoder.decode(more)


def _xml_encoding(head: bytes) -> str | None:
    """The encoding an XML part's first bytes imply (XML 1.0 appendix F), or None if they do
    not begin like XML at all."""
    for prefix, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (b"<\x00\x00\x00", "utf-32-le"),
        (b"\x00\x00\x00<", "utf-32-be"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (b"<\x00", "utf-16-le"),
        (b"\x00<", "utf-16-be"),
    ):
        if head.startswith(prefix):
            return encoding
    if head.lstrip(b" \t\r\n").startswith(b"<"):
        return "utf-8"  # also right for the ASCII-compatible encodings a declaration names
    return None


def _prolog_verdict(text: str, *, final: bool) -> bool | None:
    """True if the prolog declares something (`<!DOCTYPE`, `<!ENTITY`, …), False once the
    root element starts (or the text is not XML), None if more text is needed to tell."""
    at = 0
    while True:
        while at < len(text) and text[at] in " \t\r\n\ufeff":
            at += 1
        rest = text[at : at + 4]
        if not rest:
            return None if not final else False
        if rest.startswith("<?"):
            end = text.find("?>", at + 2)
            if end < 0:
                return None if not final else True
            at = end + 2
        elif rest.startswith("<!--"):
            end = text.find("-->", at + 4)
            if end < 0:
                return None if not final else True
            at = end + 3
        elif "<!--".startswith(rest) and not final:
            return None  # "<", "<!" or "<!-" at the end of what was read
        else:
            # `<!` opens a declaration. Anything else is the root element's start tag,
            # after which no DTD can come, or text that is not well-formed XML, which
            # python-docx will refuse.
            return rest.startswith("<!")
