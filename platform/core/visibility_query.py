"""The visibility query language: which runs of a namespace to list or count, in Temporal's style.

    WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND CustomerId = 'c-42'
      AND StartTime > '2026-12-01T00:00:00Z' ORDER BY StartTime DESC

Comparisons ``=  !=  <  >  <=  >=``, ``IN (...)``, ``NOT IN (...)``, ``BETWEEN a AND b``,
``STARTS_WITH 'prefix'``, ``AND``, ``OR`` and parentheses; ``ORDER BY field [ASC|DESC], ...``. Keywords
are case-insensitive, strings are quoted ('...' or "..."). Fields are the built-in ones (``FIELDS``) and
the namespace's registered search attributes, each with a type that its values must have. Parsing checks
everything a query can get wrong by itself and says where, with the offending token; which queries an
index can serve is decided where the query meets the database (``platform/stores``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from lark import Lark, Token, Transformer, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, v_args
from lark.exceptions import VisitError

AttributeType = Literal["Keyword", "Text", "Int", "Double", "Bool", "Datetime"]
Operator = Literal["=", "!=", "<", ">", "<=", ">="]
Value = str | int | float | bool | datetime

# The built-in fields every run has, with their types.
FIELDS: dict[str, AttributeType] = {
    "WorkflowId": "Keyword",
    "WorkflowType": "Keyword",
    "RunId": "Keyword",
    "ExecutionStatus": "Keyword",
    "StartTime": "Datetime",
    "CloseTime": "Datetime",
}
# ExecutionStatus as Temporal names it, and the run status each means.
STATUSES = {
    "Running": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Canceled": "canceled",
    "Terminated": "terminated",
    "TimedOut": "timed_out",
    "ContinuedAsNew": "continued_as_new",
}
MAX_QUERY_CHARS = 4000
MAX_IN_VALUES = 1000
# How deep AND and OR may nest (a database refuses a filter nested much deeper, and so does recursion).
MAX_DEPTH = 16
# What a stored Int can be (BSON's 64-bit integer): a larger one cannot even be sent to the database.
MIN_INT, MAX_INT = -(2**63), 2**63 - 1

_GRAMMAR = r"""
    start: expr? order?
    order: _ORDER _BY sort ("," sort)*
    sort: NAME DIRECTION?
    ?expr: or_expr
    ?or_expr: and_expr (_OR and_expr)*
    ?and_expr: atom (_AND atom)*
    ?atom: "(" expr ")"
         | NAME OPERATOR value              -> comparison
         | NAME NOT? _IN "(" value ("," value)* ")" -> member
         | NAME _BETWEEN value _AND value   -> between
         | NAME _STARTS_WITH value          -> starts_with
    ?value: STRING | NUMBER | TRUE | FALSE

    _ORDER.2: /order\b/i
    _BY.2: /by\b/i
    _OR.2: /or\b/i
    _AND.2: /and\b/i
    _IN.2: /in\b/i
    NOT.2: /not\b/i
    _BETWEEN.2: /between\b/i
    _STARTS_WITH.2: /starts_with\b/i
    DIRECTION.2: /(asc|desc)\b/i
    TRUE.2: /true\b/i
    FALSE.2: /false\b/i
    OPERATOR: "!=" | "<=" | ">=" | "=" | "<" | ">"
    NAME: /[A-Za-z_][A-Za-z0-9_]*/
    STRING: /'(?:[^'\\]|\\.)*'/ | /"(?:[^"\\]|\\.)*"/
    NUMBER: /-?\d+(\.\d+)?([eE][-+]?\d+)?/
    %import common.WS
    %ignore WS
"""
# A basic lexer: a keyword is a keyword wherever it stands (so "AND AND" is refused at the second).
_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=False)


class QueryError(ValueError):
    """A query that cannot be run, with where it goes wrong (``column``, 1-based; 0: the query as a
    whole) and the query with a caret under that place."""

    def __init__(self, query: str, column: int, message: str) -> None:
        self.query = query
        self.column = column
        self.reason = message
        where = f" at column {column}" if column else ""
        pointer = f"\n  {query}\n  {' ' * (column - 1)}^" if column and len(query) <= 200 else ""
        super().__init__(f"bad query{where}: {message}{pointer}")


@dataclass(frozen=True)
class Comparison:
    field: str
    operator: Operator
    value: Value


@dataclass(frozen=True)
class Member:
    field: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    field: str
    low: Value
    high: Value


@dataclass(frozen=True)
class StartsWith:
    field: str
    prefix: str


@dataclass(frozen=True)
class All:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


Condition = Comparison | Member | Between | StartsWith | All | AnyOf


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool


@dataclass(frozen=True)
class VisibilityQuery:
    condition: Condition | None  # None: every run
    order: tuple[Sort, ...]
    # The search attributes it was checked against (the namespace's registration), with their types.
    attributes: dict[str, AttributeType] = field(default_factory=dict, compare=False)

    def fields(self) -> set[str]:
        """Every field the condition names."""
        found: set[str] = set()

        def visit(condition: Condition) -> None:
            if isinstance(condition, All | AnyOf):
                for part in condition.parts:
                    visit(part)
            else:
                found.add(condition.field)

        if self.condition is not None:
            visit(self.condition)
        return found


def parse_query(query: str, attributes: dict[str, AttributeType] | None = None) -> VisibilityQuery:
    """Parse and type-check ``query`` against the built-in fields and ``attributes`` (the namespace's
    registered search attributes); raises ``QueryError`` pointing at the offending token."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(query[:80] + "...", 0, f"longer than {MAX_QUERY_CHARS} characters")
    known = {**FIELDS, **(attributes or {})}
    _check_text(query)
    try:
        tree = _PARSER.parse(query)
    except UnexpectedInput as exc:
        raise _syntax_error(query, exc) from None
    _check_nesting(query, tree)
    try:
        parsed: VisibilityQuery = _Typed(query, known).transform(tree)
    except VisitError as exc:  # lark wraps what a rule raised
        if isinstance(exc.orig_exc, QueryError):
            raise exc.orig_exc from None
        raise
    except RecursionError:  # a last guard: _check_text bounds the nesting well below this
        raise QueryError(query, 0, f"AND and OR nest more than {MAX_DEPTH} levels deep") from None
    if _depth(parsed.condition) > MAX_DEPTH:
        raise QueryError(query, 0, f"AND and OR nest more than {MAX_DEPTH} levels deep")
    return replace(parsed, attributes=dict(attributes or {}))


def _check_text(query: str) -> None:
    """Refuse, before parsing, text the database cannot be sent (a lone surrogate is no UTF-8)."""
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = query.encode("utf-8", "backslashreplace").decode()  # the error itself must be sendable
        raise QueryError(shown, 0, f"character {exc.start + 1} is no text (a lone surrogate)") from None


def _check_nesting(query: str, tree: Tree[Token]) -> None:
    """Refuse AND and OR nested deeper than ``MAX_DEPTH`` before the tree is transformed: that walk
    recurses, and a few hundred alternating groups would exhaust the interpreter's stack. (Redundant
    parentheses leave no trace in the tree.) Walked with a stack of its own."""
    pending: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if node.data in ("and_expr", "or_expr"):
            depth += 1
            if depth > MAX_DEPTH:
                raise QueryError(query, 0, f"AND and OR nest more than {MAX_DEPTH} levels deep")
        pending.extend((child, depth) for child in node.children if isinstance(child, Tree))


def _depth(condition: Condition | None) -> int:
    if isinstance(condition, All | AnyOf):
        return 1 + max(_depth(part) for part in condition.parts)
    return 0


def _syntax_error(query: str, exc: UnexpectedInput) -> QueryError:
    if isinstance(exc, UnexpectedEOF):
        return QueryError(query, len(query) + 1, "the query ends too soon (a value or ')' is missing)")
    column = int(getattr(exc, "column", 0) or 0)
    if isinstance(exc, UnexpectedCharacters):
        return QueryError(query, column, f"unexpected character {query[column - 1]!r}")
    token = getattr(exc, "token", None)
    if token is not None and token.type == "$END":
        return QueryError(query, len(query) + 1, "the query ends too soon (a value or ')' is missing)")
    shown = str(token) if token is not None else "?"
    return QueryError(query, column, f"unexpected {shown!r}")


def _stored_time(query: str, where: int, moment: datetime) -> datetime:
    """A time of a query as the database holds times: in UTC (one without a zone is UTC), to the
    millisecond (so the in-memory evaluator compares as the database does)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise QueryError(query, where, "the time is out of range once in UTC") from None
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@v_args(inline=True)
class _Typed(Transformer[Token, Any]):
    """The parse tree to a ``VisibilityQuery``, every field known and every value of its field's type."""

    def __init__(self, query: str, known: dict[str, AttributeType]) -> None:
        super().__init__()
        self.query = query
        self.known = known

    def _field(self, name: Token) -> tuple[str, AttributeType]:
        field = str(name)
        if field not in self.known:
            choices = ", ".join(sorted(self.known))
            raise QueryError(self.query, name.column or 0, f"unknown field {field!r} (known: {choices})")
        return field, self.known[field]

    def _value(self, field: str, kind: AttributeType, token: Token) -> Value:
        where = token.column or 0
        raw = str(token)
        if token.type == "STRING":
            text = raw[1:-1].replace(f"\\{raw[0]}", raw[0]).replace("\\\\", "\\")
            if kind in ("Keyword", "Text"):
                if field == "ExecutionStatus":
                    if text not in STATUSES:
                        raise QueryError(
                            self.query,
                            where,
                            f"{text!r} is no ExecutionStatus (one of {', '.join(STATUSES)})",
                        )
                    return STATUSES[text]
                return text
            if kind == "Datetime":
                try:
                    moment = datetime.fromisoformat(text)
                except ValueError:
                    raise QueryError(
                        self.query, where, f"{text!r} is no time: write it as '2026-12-01T00:00:00Z'"
                    ) from None
                return _stored_time(self.query, where, moment)
        elif token.type == "NUMBER":
            if kind == "Int" and raw.lstrip("-").isdigit():
                number = int(raw)
                if not MIN_INT <= number <= MAX_INT:
                    raise QueryError(self.query, where, f"{raw} is beyond what an Int holds (64 bits)")
                return number
            if kind == "Double":
                return float(raw)
        elif token.type in ("TRUE", "FALSE") and kind == "Bool":
            return token.type == "TRUE"
        raise QueryError(self.query, where, f"{field} holds {kind} values: {raw} is not one")

    def comparison(self, name: Token, operator: Token, value: Token) -> Comparison:
        field, kind = self._field(name)
        if kind in ("Text", "Bool") and str(operator) not in ("=", "!="):
            raise QueryError(
                self.query, operator.column or 0, f"{field} ({kind}) is compared with = or != only"
            )
        return Comparison(field, str(operator), self._value(field, kind, value))  # type: ignore[arg-type]

    def member(self, name: Token, *rest: Token) -> Member:
        field, kind = self._field(name)
        negated = bool(rest) and rest[0].type == "NOT"
        values = rest[1:] if negated else rest
        if len(values) > MAX_IN_VALUES:
            raise QueryError(self.query, name.column or 0, f"IN takes at most {MAX_IN_VALUES} values")
        return Member(field, tuple(self._value(field, kind, v) for v in values), negated)

    def between(self, name: Token, low: Token, high: Token) -> Between:
        field, kind = self._field(name)
        if kind not in ("Int", "Double", "Datetime", "Keyword"):
            raise QueryError(self.query, name.column or 0, f"{field} ({kind}) has no order for BETWEEN")
        return Between(field, self._value(field, kind, low), self._value(field, kind, high))

    def starts_with(self, name: Token, prefix: Token) -> StartsWith:
        field, kind = self._field(name)
        if kind != "Keyword" or field == "ExecutionStatus":
            raise QueryError(self.query, name.column or 0, f"STARTS_WITH takes a Keyword field, not {field}")
        value = self._value(field, kind, prefix)
        assert isinstance(value, str)
        return StartsWith(field, value)

    def and_expr(self, *parts: Condition) -> All:
        return All(tuple(parts))

    def or_expr(self, *parts: Condition) -> AnyOf:
        return AnyOf(tuple(parts))

    def sort(self, name: Token, direction: Token | None = None) -> Sort:
        field, kind = self._field(name)
        if kind in ("Text", "Bool"):
            raise QueryError(self.query, name.column or 0, f"runs are not ordered by {field} ({kind})")
        return Sort(field, direction is not None and str(direction).lower() == "desc")

    def order(self, *sorts: Sort) -> tuple[Sort, ...]:
        return sorts

    def start(self, *parts: Any) -> VisibilityQuery:
        condition = next((p for p in parts if not isinstance(p, tuple)), None)
        order = next((p for p in parts if isinstance(p, tuple)), ())
        return VisibilityQuery(condition, order)
