"""What every care document shares: patient charts and household documents alike.

Each document has a root with ``schema_version``, ``kind``, ``id``, ``created_at``,
``created_by`` and a ``fields`` map of multi-value registers (see registers.py). Every write
validates first, then applies in one Automerge transaction, so a refused write changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Self

import automerge.core as am

from care_record import registers
from care_record.clock import Clock
from care_record.errors import InvalidValue, NotAChart, UnknownRecord
from care_record.ids import new_id
from care_record.migrations import MIGRATIONS, Migration, migrate
from care_record.schema import SCHEMA_VERSION
from care_record.view import ChartView, build_view

Tree = Mapping[str, Any]


class CareDocument:
    """Base of Chart and HouseholdRecord; holds the Automerge document and who is writing."""

    KIND = ""

    def __init__(self, doc: am.Document, *, author: str, clock: Clock) -> None:
        self._doc = doc
        self.author = author
        self.clock = clock

    @classmethod
    def load(
        cls,
        data: bytes,
        *,
        author: str,
        clock: Clock,
        actor: bytes | None = None,
        migrations: Mapping[int, Migration] = MIGRATIONS,
    ) -> Self:
        """Open saved bytes, migrating an older schema on read.

        Raises NotAChart for bytes that are not a document of this kind, ChartTooNew for one
        written by a newer schema.
        """
        doc = load_document(data, kind=cls.KIND)
        if actor is not None:
            doc.set_actor(actor)
        migrate(doc, migrations, target=max([SCHEMA_VERSION, *migrations]))
        return cls(doc, author=author, clock=clock)

    def save(self) -> bytes:
        return self._doc.save()

    def fork(self, *, author: str, actor: bytes | None = None) -> Self:
        """An independent copy, as a second device would hold it."""
        doc = self._doc.fork()
        doc.set_actor(actor or am.random_actor_id())
        return type(self)(doc, author=author, clock=self.clock)

    def merge(self, other: CareDocument) -> None:
        """Take every change of ``other``; no value is lost, conflicts stay listed."""
        self._doc.merge(other._doc)

    @property
    def document(self) -> am.Document:
        """The underlying Automerge document, for the sync layer."""
        return self._doc

    @property
    def id(self) -> str:
        return str(root_scalar(self._doc, "id"))

    @property
    def heads(self) -> list[bytes]:
        return self._doc.get_heads()

    def view(self) -> ChartView:
        """Everything in the chart as plain values, with its conflicts listed."""
        return build_view(self._doc)

    def resolve(self, path: str, write_id: str) -> None:
        """Settle a conflict by keeping the value that ``write_id`` wrote."""
        entries = registers.read_all(self._doc).get(path, [])
        chosen = next((e for e in entries if e.write_id == write_id), None)
        if chosen is None:
            raise UnknownRecord(f"no value {write_id} for field {path}")
        with self._change() as tx:
            self._write_field(tx, path, chosen.value)

    @contextmanager
    def _change(self) -> Iterator[am.Transaction]:
        with self._doc.transaction() as tx:
            yield tx

    def _write_field(self, tx: am.Transaction, path: str, value: registers.Scalar) -> None:
        registers.write(
            tx, path, value, write_id=new_id(self.clock), at=self.clock.now(), by=self.author
        )

    def _require(self, collection: str, record_id: str) -> bytes:
        found = self._doc.get(section(self._doc, collection), record_id)
        if found is None:
            raise UnknownRecord(f"no {collection[:-1]} with ID {record_id} in this chart")
        return found[1]


def load_document(data: bytes, *, kind: str) -> am.Document:
    """Load Automerge bytes and check they hold a chart of ``kind``. Raises NotAChart."""
    try:
        doc = am.Document.load(data)
    except Exception as exc:  # the binding raises bare exceptions for corrupt input
        raise NotAChart("the chart data is damaged or is not a chart") from exc
    fields = doc.get(am.ROOT, "fields")
    if root_scalar(doc, "kind") != kind or fields is None or fields[0] != am.ObjType.Map:
        raise NotAChart(f"the document is not a {kind} chart")
    return doc


def put_root(tx: am.Transaction, kind: str, doc_id: str, author: str, at: datetime) -> None:
    tx.put(am.ROOT, "schema_version", am.ScalarType.Int, SCHEMA_VERSION)
    tx.put(am.ROOT, "kind", am.ScalarType.Str, kind)
    tx.put(am.ROOT, "id", am.ScalarType.Str, doc_id)
    tx.put(am.ROOT, "created_at", am.ScalarType.Str, iso(at))
    tx.put(am.ROOT, "created_by", am.ScalarType.Str, author)
    tx.put_object(am.ROOT, "fields", am.ObjType.Map)


def root_scalar(doc: am.Document, key: str) -> registers.Scalar:
    found = doc.get(am.ROOT, key)
    if found is None or isinstance(found[0], am.ObjType):
        return None
    value = found[0][1]
    return value if not isinstance(value, bytes | datetime) else None


def section(doc: am.Document | am.Transaction, name: str) -> bytes:
    found = doc.get(am.ROOT, name)
    if found is None or found[0] != am.ObjType.Map:
        raise NotAChart(f"the chart has no {name} section")
    return found[1]


def put_tree(tx: am.Transaction, obj: bytes, key: str, tree: Tree) -> None:
    child = tx.put_object(obj, key, am.ObjType.Map)
    for name, value in tree.items():
        if isinstance(value, Mapping):
            put_tree(tx, child, name, value)
        else:
            tx.put(child, name, *registers.typed(scalar(value)))


def plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: scalar(v) for k, v in record.items()}


def scalar(value: object) -> registers.Scalar:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise InvalidValue(f"cannot store a value of type {type(value).__name__}")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
