"""Decide what a file is from its bytes, never from its name alone."""

from __future__ import annotations

import codecs
import re
import zipfile
from pathlib import Path, PurePath

from quarry.documents.parsing.images import check_image
from quarry.documents.parsing.model import DocumentKind, UnsupportedFileType, content_type_for
from quarry.documents.parsing.ooxml import OLE2_MAGIC, read_zip_directory, too_many_entries_reason
from quarry.documents.parsing.text import detect_text_encoding

SUPPORTED_FORMATS = (
    "Quarry reads PDF, DOCX, TXT and Markdown files and JPEG, PNG, TIFF and WebP images."
)

# Enough to judge text vs binary on any real file without reading a big one whole.
_SAMPLE_SIZE = 64 * 1024
# Acrobat and MuPDF accept up to 1 KiB of junk (mail headers, BOMs) before the header.
_PDF_HEADER = re.compile(rb"%PDF-\d\.\d")
_PDF_HEADER_WINDOW = 1024 + 8
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OLE2_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_WORD_SUFFIXES = frozenset({".docx", ".docm"})
_ENCRYPTED_OFFICE_BY_SUFFIX = {
    ".xlsx": "a password-protected Excel workbook",
    ".pptx": "a password-protected PowerPoint presentation",
}
# A web page saved in place of the document (a sign-in or paywall page downloaded as
# "paper.pdf") is text, but not text anyone wants extracted.
_HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])", re.I | re.S
)
# Real text has almost no control characters; binary data has about one byte in nine.
_MAX_CONTROL_SHARE = 0.05
# A few undecodable bytes are a stray legacy-encoded accent (decoded as U+FFFD); many mean
# the whole file is in a legacy encoding and would come out as mush.
_MAX_UNDECODABLE_SHARE = 0.25
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_RESAVE_AS_DOCX = "save it as .docx or PDF and upload it again."

# Only magics long or odd enough never to begin a real text file; anything else binary is
# caught by the NUL / control-character test. Each: (magic, what it is, hint or None).
_BINARY_MAGICS: tuple[tuple[bytes, str, str | None], ...] = (
    (b"GIF87a", "a GIF image", "save it as PNG and upload it again."),
    (b"GIF89a", "a GIF image", "save it as PNG and upload it again."),
    (b"\x7fELF", "a program (ELF executable)", None),
    (b"\x1f\x8b", "a gzip-compressed file", None),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", None),
    (b"Rar!\x1a\x07", "a RAR archive", None),
    (b"\xfd7zXZ\x00", "an XZ-compressed file", None),
    (b"\x28\xb5\x2f\xfd", "a Zstandard-compressed file", None),
    (b"SQLite format 3\x00", "an SQLite database", None),
    (b"{\\rtf", "an RTF document", _RESAVE_AS_DOCX),
    (b"%!PS", "a PostScript file", "save it as PDF and upload it again."),
)
# Magics that do not sit at offset 0 or need a pattern.
_BINARY_PATTERNS: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"BZh[1-9]1AY&SY"), "a bzip2-compressed file"),
    # Phone photos of paper documents arrive as HEIC.
    (re.compile(rb"....ftyp(?:heic|heix|mif1|msf1)", re.DOTALL), "a HEIC image"),
)

# Images Quarry reads (by OCR); the header is checked before anything is decoded.
_IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
_WEBP = re.compile(rb"RIFF....WEBP", re.DOTALL)
_IMAGE_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "TIFF": "image/tiff",
    "WebP": "image/webp",
}

_OLE2_BY_SUFFIX = {
    ".xls": "a legacy Excel .xls workbook",
    ".ppt": "a legacy PowerPoint .ppt presentation",
    ".msg": "an Outlook .msg message",
}
_OPENDOCUMENT_BY_MIMETYPE: dict[bytes, tuple[str, str | None]] = {
    b"application/vnd.oasis.opendocument.text": (
        "an OpenDocument text file (.odt)",
        _RESAVE_AS_DOCX,
    ),
    b"application/vnd.oasis.opendocument.spreadsheet": ("an OpenDocument spreadsheet (.ods)", None),
    b"application/vnd.oasis.opendocument.presentation": (
        "an OpenDocument presentation (.odp)",
        None,
    ),
    b"application/epub+zip": ("an EPUB e-book", None),
}


def sniff_document(path: Path, filename: str) -> tuple[DocumentKind, str]:
    """The kind of the document at `path` and the MIME type to store with it (see
    `sniff_kind`, which raises the same errors; `ImageTooLarge` for a decompression bomb)."""
    kind = sniff_kind(path, filename)
    if kind is DocumentKind.IMAGE:
        return kind, _IMAGE_TYPES.get(check_image(path, filename), "application/octet-stream")
    return kind, content_type_for(kind, filename)


def sniff_kind(path: Path, filename: str) -> DocumentKind:
    """The kind of document stored at `path`, judged by its content.

    `filename` (the name the user uploaded) is used only to word the error. Raises
    `UnsupportedFileType` with a sentence naming what the file is, when that is known.
    """
    with path.open("rb") as file:
        head = file.read(_SAMPLE_SIZE)

    if not head:
        raise UnsupportedFileType(f"{filename} is empty.")
    if _PDF_HEADER.search(head[:_PDF_HEADER_WINDOW]):
        return DocumentKind.PDF
    if head.startswith(_ZIP_MAGICS):
        return _sniff_zip(path, filename)
    if head.startswith(OLE2_MAGIC):
        return _sniff_ole2(head, filename)
    if head.startswith(_IMAGE_MAGICS) or _WEBP.match(head):
        check_image(path, filename)
        return DocumentKind.IMAGE
    for magic, what, hint in _BINARY_MAGICS:
        if head.startswith(magic):
            raise _unsupported(filename, what, hint)
    for pattern, what in _BINARY_PATTERNS:
        if pattern.match(head):
            raise _unsupported(filename, what)
    _check_is_decodable_text(head, filename)
    if _looks_like_html(head):
        raise _unsupported(
            filename,
            "a web page (HTML)",
            "if a download saved a site's page instead of the document, download the "
            "document itself; otherwise save the page as PDF and upload that.",
        )
    return DocumentKind.TEXT


def _unsupported(filename: str, what: str, hint: str | None = None) -> UnsupportedFileType:
    return UnsupportedFileType(f"{filename} is {what}; {hint or SUPPORTED_FORMATS}")


def _sniff_ole2(head: bytes, filename: str) -> DocumentKind:
    # Password-protected .docx files are not ZIPs but OLE2 containers holding an
    # "EncryptedPackage" stream. They are accepted as Word documents so that parsing ends
    # them `failed` with the reason, as for a password-protected PDF; calling them legacy
    # .doc files would send users astray.
    suffix = PurePath(filename).suffix.lower()
    if suffix in _ENCRYPTED_OFFICE_BY_SUFFIX:
        raise _unsupported(filename, _ENCRYPTED_OFFICE_BY_SUFFIX[suffix])
    if _OLE2_ENCRYPTED_PACKAGE in head or suffix in _WORD_SUFFIXES:
        return DocumentKind.DOCX
    what = _OLE2_BY_SUFFIX.get(suffix, "a legacy Word .doc file")
    raise UnsupportedFileType(
        f"{filename} is {what} (the pre-2007 Office format); "
        "save it as .docx or PDF and upload it again."
    )


def _sniff_zip(path: Path, filename: str) -> DocumentKind:
    # Reads only the central directory (and, for OpenDocument, a few bytes of the
    # stored `mimetype` entry); nothing is extracted. The directory's size is checked from
    # the end record first: listing hundreds of thousands of entries would cost this
    # process (the API) hundreds of megabytes and seconds of CPU.
    directory = read_zip_directory(path)
    if directory is not None and directory.is_oversized:
        raise UnsupportedFileType(too_many_entries_reason(directory, filename))
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "word/document.xml" in names:
                return DocumentKind.DOCX
            mimetype = _read_mimetype(archive) if "mimetype" in names else b""
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UnsupportedFileType(
            f"{filename} looks like a ZIP-based file (such as .docx) but it is damaged or "
            "incomplete; try saving or downloading it again."
        ) from exc

    if "xl/workbook.xml" in names:
        raise _unsupported(filename, "an Excel workbook (.xlsx)")
    if "ppt/presentation.xml" in names:
        raise _unsupported(filename, "a PowerPoint presentation (.pptx)")
    if mimetype in _OPENDOCUMENT_BY_MIMETYPE:
        raise _unsupported(filename, *_OPENDOCUMENT_BY_MIMETYPE[mimetype])
    raise _unsupported(filename, "a ZIP archive")


def _read_mimetype(archive: zipfile.ZipFile) -> bytes:
    try:
        with archive.open("mimetype") as entry:
            return entry.read(100).strip()
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError):
        # Encrypted or exotically compressed entry: the file stays "a ZIP archive".
        return b""


def _looks_like_html(head: bytes) -> bool:
    encoding, bom_length = detect_text_encoding(head)
    start = head[bom_length : bom_length + 4096].decode(encoding, errors="replace")
    return _HTML_START.match(start) is not None


def _check_is_decodable_text(head: bytes, filename: str) -> None:
    """Raise unless `head` is UTF-8 (BOM optional) or UTF-16/32 (with BOM) text."""
    encoding, bom_length = detect_text_encoding(head)
    # Incremental so that a character cut in half at the end of the sample is not
    # counted as an invalid sequence.
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    sample = decoder.decode(head[bom_length:], final=False)
    controls = sum(
        1 for char in sample if (char < " " and char not in _ALLOWED_CONTROLS) or char == "\x7f"
    )
    # NULs count as control characters: a few stray ones (a database export, a bad paste)
    # are stripped when parsing, while binary data and UTF-16 without a BOM (every other
    # byte NUL) are far over the share.
    if controls > _MAX_CONTROL_SHARE * len(sample):
        raise _unsupported(filename, "a binary file, not text")
    if sample.count("\ufffd") > _MAX_UNDECODABLE_SHARE * len(sample):
        raise _unsupported(
            filename,
            "text in an encoding Quarry cannot read",
            "save it as UTF-8 (or UTF-16) text and upload it again.",
        )
