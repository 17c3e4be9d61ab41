"""Word (.docx) text extraction: paragraphs and tables in reading order, split at page breaks.

python-docx opens and validates the package; the body is then walked as XML because
python-docx's own `.text` drops tracked insertions and content controls, and maps hard page
breaks to "" so they could not be told apart.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from lxml.etree import LxmlError, _Element

from quarry.documents.parsing.model import DocumentParseError, ParsedDocument, build_document
from quarry.documents.parsing.ooxml import check_docx_package
from quarry.documents.parsing.text import NO_TEXT_REASON

CELL_SEPARATOR = " | "
# Separates the rows of a table nested in a cell, which must stay on its outer row's line.
NESTED_ROW_SEPARATOR = "; "

# python-docx loads every part into memory, and lxml's tree of a part takes several times
# its size: refuse archives that would expand past this before it does (see ooxml.py).
MAX_EXPANDED_BYTES = 256 * 1024 * 1024

_P, _TBL, _TR, _TC = qn("w:p"), qn("w:tbl"), qn("w:tr"), qn("w:tc")
_R, _T = qn("w:r"), qn("w:t")
_SDT, _SDT_CONTENT, _CUSTOM_XML = qn("w:sdt"), qn("w:sdtContent"), qn("w:customXml")
_BLOCK_TAGS, _ROW_TAGS, _CELL_TAGS = frozenset({_P, _TBL}), frozenset({_TR}), frozenset({_TC})
_VAL, _TYPE = qn("w:val"), qn("w:type")
_SECT_PR = qn("w:sectPr")
# Elements whose runs are part of the visible text. Deliberately absent: w:del and
# w:moveFrom (tracked deletions), w:pPr/w:rPr, and drawings (text boxes are duplicated
# in mc:AlternateContent fallbacks).
_TRANSPARENT = frozenset(
    qn(tag)
    for tag in (
        "w:hyperlink",
        "w:ins",
        "w:moveTo",
        "w:smartTag",
        "w:fldSimple",
        "w:customXml",
        "w:dir",
        "w:bdo",
    )
)
_BR = qn("w:br")
# Run children that stand for characters (w:t and w:br are handled separately).
_RUN_CHARACTERS = {
    qn("w:tab"): "\t",
    qn("w:ptab"): "\t",
    qn("w:cr"): "\n",
    qn("w:noBreakHyphen"): "-",
}
_FALSE_VALUES = frozenset({"0", "false", "off"})


class _Pages:
    """Collects lines, one per paragraph or table row, into pages."""

    def __init__(self, section_starts_new_page: list[bool]) -> None:
        self.pages: list[list[str]] = [[]]
        self.break_before_next_line = False
        self._section_starts_new_page = section_starts_new_page
        self._section_index = 0

    def end_section(self) -> None:
        self._section_index += 1
        starts = self._section_starts_new_page
        if self._section_index < len(starts) and starts[self._section_index]:
            # Deferred so that a section break at the very end adds no empty page.
            self.break_before_next_line = True

    def add_line(self, line: str) -> None:
        if self.break_before_next_line:
            self.break_before_next_line = False
            self.new_page()
        self.pages[-1].append(line)

    def new_page(self) -> None:
        self.pages.append([])

    @property
    def next_line_starts_page(self) -> bool:
        return self.break_before_next_line or not self.pages[-1]


def parse_docx(path: Path) -> ParsedDocument:
    """Body text of a .docx: one line per paragraph and per table row ("a | b").

    Hard page breaks, "page break before" paragraphs and next-page section breaks start a
    new page; a document without them is a single page. Headers, footers, footnotes and
    text boxes are not read.
    """
    body = _open_body(path)
    pages = _Pages(_section_starts_new_page(body))
    for block in _iter_blocks(body):
        if block.tag == _P:
            _read_paragraph(block, pages)
        else:
            for row in _table_rows(block):
                pages.add_line(row)
    document = build_document(["\n".join(lines) for lines in pages.pages])
    if not document.text.strip():
        raise DocumentParseError(NO_TEXT_REASON)
    return document


def _open_body(path: Path) -> _Element:
    check_docx_package(path, MAX_EXPANDED_BYTES)
    try:
        return docx.Document(str(path)).element.body
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DocumentParseError(
            "The Word document is damaged or incomplete; try saving or downloading it again."
        ) from exc
    except (KeyError, PackageNotFoundError) as exc:
        raise DocumentParseError(
            "The file is a ZIP archive but not a complete Word document."
        ) from exc
    except ValueError as exc:
        # python-docx refuses packages whose main part is not a plain document.
        raise DocumentParseError(
            "The file is not a plain Word document (macro-enabled .docm files and templates "
            "are not supported); save it as .docx and upload it again."
        ) from exc
    except LxmlError as exc:
        raise DocumentParseError(
            "The Word document is damaged: its text is not well-formed XML."
        ) from exc


def _iter_blocks(container: _Element) -> Iterator[_Element]:
    """Paragraphs and tables of a body or cell, in order."""
    return _iter_unwrapped(container, _BLOCK_TAGS)


def _iter_unwrapped(parent: _Element, tags: frozenset[str]) -> Iterator[_Element]:
    """Children with one of `tags`, including those wrapped in content controls (w:sdt) or
    custom XML, which python-docx's own iteration skips."""
    for child in parent:
        if child.tag in tags:
            yield child
        elif child.tag == _SDT:
            for content in child.iterchildren(_SDT_CONTENT):
                yield from _iter_unwrapped(content, tags)
        elif child.tag == _CUSTOM_XML:
            yield from _iter_unwrapped(child, tags)


def _read_paragraph(paragraph: _Element, pages: _Pages) -> None:
    properties = paragraph.find(qn("w:pPr"))
    # Word ignores "page break before" on what is already the top of a page.
    if _flag_is_on(properties, "w:pageBreakBefore") and not pages.next_line_starts_page:
        pages.new_page()
    first, *after_breaks = _paragraph_segments(paragraph)
    pages.add_line(first)
    for segment in after_breaks:
        pages.new_page()
        pages.add_line(segment)
    if properties is not None and properties.find(_SECT_PR) is not None:
        pages.end_section()


def _paragraph_segments(paragraph: _Element) -> list[str]:
    """The paragraph's text, split wherever a hard page break (w:br w:type="page") sits."""
    segments: list[list[str]] = [[]]
    for run in _iter_runs(paragraph):
        for item in run:
            if item.tag == _T:
                segments[-1].append(item.text or "")
            elif item.tag == _BR:
                if item.get(_TYPE) == "page":
                    segments.append([])
                else:
                    segments[-1].append("\n")
            elif item.tag in _RUN_CHARACTERS:
                segments[-1].append(_RUN_CHARACTERS[item.tag])
    return ["".join(parts) for parts in segments]


def _iter_runs(parent: _Element) -> Iterator[_Element]:
    for child in parent:
        if child.tag == _R:
            yield child
        elif child.tag in _TRANSPARENT:
            yield from _iter_runs(child)
        elif child.tag == _SDT:
            for content in child.iterchildren(_SDT_CONTENT):
                yield from _iter_runs(content)


def _table_rows(table: _Element) -> list[str]:
    """One line per row. A cell spanning columns appears once; a cell continuing a vertical
    merge is empty, so columns stay aligned without repeating the merged text."""
    rows: list[str] = []
    for row in _iter_unwrapped(table, _ROW_TAGS):
        cells = [_cell_text(cell) for cell in _iter_unwrapped(row, _CELL_TAGS)]
        rows.append(CELL_SEPARATOR.join(cells) if any(cells) else "")
    return rows


def _cell_text(cell: _Element) -> str:
    if _continues_vertical_merge(cell):
        return ""
    parts: list[str] = []
    for block in _iter_blocks(cell):
        if block.tag == _P:
            text = " ".join(_paragraph_segments(block))
        else:
            text = NESTED_ROW_SEPARATOR.join(row for row in _table_rows(block) if row)
        # A row is one line, so line breaks inside a cell become spaces.
        text = text.replace("\n", " ").strip()
        if text:
            parts.append(text)
    return " ".join(parts)


def _continues_vertical_merge(cell: _Element) -> bool:
    merge = cell.find(f"{qn('w:tcPr')}/{qn('w:vMerge')}")
    # <w:vMerge/> without a value means "continue"; only "restart" begins a merged cell.
    return merge is not None and merge.get(_VAL, "continue") == "continue"


def _flag_is_on(properties: _Element | None, tag: str) -> bool:
    if properties is None:
        return False
    flag = properties.find(qn(tag))
    return flag is not None and flag.get(_VAL, "true").lower() not in _FALSE_VALUES


def _section_starts_new_page(body: _Element) -> list[bool]:
    """For each section in document order, whether it begins on a new page.

    A section's w:sectPr sits in its last paragraph (the final one directly in the body)
    and its w:type says how *that* section starts; absent means "nextPage" (ECMA-376).
    """
    starts: list[bool] = []
    for section in body.iter(_SECT_PR):
        parent = section.getparent()
        # Skip copies kept in tracked-change history (w:pPrChange/w:pPr/w:sectPr).
        if parent is body or (parent.tag == qn("w:pPr") and parent.getparent().tag == _P):
            section_type = section.find(qn("w:type"))
            starts.append(section_type is None or section_type.get(_VAL) != "continuous")
    return starts
