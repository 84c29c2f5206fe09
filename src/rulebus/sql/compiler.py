"""Syntax tree → Python closures, so that evaluating a rule walks no tree.

Every expression becomes a closure ``fn(doc, ctx, variables)``: ``doc`` is the
current document (the payload, or an array element inside a nested query),
``ctx`` the :class:`~rulebus.sql.context.EvalContext`, ``variables`` the values
of the SET clause (``None`` when the rule has none). The compiler specialises at
compile time: constant sub-expressions are folded, ``a.b.c`` becomes a walk over
a tuple of keys, and a WHERE comparison of a field with a constant gets a
closure that tests plain numbers and strings first.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rulebus.errors import SqlError
from rulebus.sql import ast
from rulebus.sql.functions import AWS_ONLY, FUNCTIONS
from rulebus.sql.functions.misc import cast
from rulebus.sql.types import (
    UNDEFINED,
    arithmetic,
    contains,
    equals,
    finish_2015,
    finish_2016,
    negate,
    not_equals,
    ordering_operand,
    same,
    to_boolean,
    whole_to_int,
)
from rulebus.sql.versions import V2015, V2016

Fn = Callable[[Any, Any, Any], Any]
Predicate = Callable[[Any, Any, Any], bool]

_NOT_CONST: Any = object()
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "<>": "<>"}
_CAST_TYPES = {
    "string": V2015,
    "nvarchar": V2015,
    "text": V2015,
    "ntext": V2015,
    "varchar": V2015,
    "int": V2015,
    "integer": V2015,
    "double": V2015,
    "decimal": V2016,
    "bool": V2016,
    "boolean": V2016,
}

Step = str | int

#: How deeply expressions may nest (calls in calls, parenthesised right operands,
#: NOT NOT ..., long a.b.c paths). Chains of AND, OR and arithmetic at one level,
#: such as 500 OR terms, do not count: they compile to loops.
MAX_DEPTH = 100


@dataclass(slots=True)
class Code:
    """A compiled expression: its closure, its value if constant, its path if a plain field."""

    fn: Fn
    const: Any = _NOT_CONST
    path: tuple[Step, ...] | None = None


def truth(value: object) -> bool:
    """Whether a condition fires: Boolean true, or a string that converts to it."""
    return value is True or (type(value) is str and value.lower() == "true")


def _constant(value: Any) -> Code:
    return Code(lambda doc, ctx, variables: value, value)


def _path_getter(path: tuple[Step, ...]) -> Fn:
    if not path:
        return lambda doc, ctx, variables: doc
    if len(path) == 1 and type(path[0]) is str:
        key = path[0]

        def one_key(doc: Any, ctx: Any, variables: Any) -> Any:
            if type(doc) is dict:
                return doc.get(key, UNDEFINED)
            return UNDEFINED

        return one_key

    def walk(doc: Any, ctx: Any, variables: Any) -> Any:
        for step in path:
            if type(step) is str:
                if type(doc) is not dict:
                    return UNDEFINED
                doc = doc.get(step, UNDEFINED)
            elif type(doc) is list and type(step) is int and 0 <= step < len(doc):
                doc = doc[step]
            else:
                return UNDEFINED
        return doc

    return walk


def _identity(value: Any) -> Any:
    return value


def _index_value(container: Any, index: Any) -> Any:
    if type(container) is list:
        if type(index) is float and index.is_integer():
            index = int(index)
        if type(index) is int and 0 <= index < len(container):
            return container[index]
    return UNDEFINED


class Compiler:
    """Compiles expressions of one rule (or template) for one SQL version."""

    def __init__(self, text: str, version: str, variables: frozenset[str] = frozenset()) -> None:
        self.text = text
        self.version = version
        self.variables = variables
        self.alias: str | None = None
        self.depth = 0

    def error(self, message: str, pos: ast.Pos) -> SqlError:
        """A compile error at ``pos``."""
        return SqlError(message, text=self.text, line=pos.line, column=pos.column)

    def _finish_number(self, value: Any) -> Any:
        return whole_to_int(value) if self.version != V2015 else value

    # Expressions.
    def expr(self, node: ast.Expr) -> Code:
        """Compile ``node`` to a value-returning closure."""
        method = getattr(self, "_" + type(node).__name__.lower())
        self._enter(node.pos)
        try:
            code: Code = method(node)
        finally:
            self.depth -= 1
        return code

    def _enter(self, pos: ast.Pos) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", pos)

    def _literal(self, node: ast.Literal) -> Code:
        return _constant(self._finish_number(node.value))

    def _field(self, node: ast.Field) -> Code:
        path: tuple[Step, ...] = () if node.name == self.alias else (node.name,)
        return Code(_path_getter(path), path=path)

    def _payload(self, node: ast.Payload) -> Code:
        return Code(_path_getter(()), path=())

    def _variable(self, node: ast.Variable) -> Code:
        if node.name not in self.variables:
            raise self.error(f"unknown variable @{node.name}; define it with SET first", node.pos)
        name = node.name
        return Code(lambda doc, ctx, variables: variables[name])

    def _member(self, node: ast.Member) -> Code:
        obj = self.expr(node.obj)
        if obj.path is not None:
            path = (*obj.path, node.name)
            return Code(_path_getter(path), path=path)
        if obj.const is not _NOT_CONST:
            value = obj.const
            return _constant(value.get(node.name, UNDEFINED) if type(value) is dict else UNDEFINED)
        get_obj, name = obj.fn, node.name

        def member(doc: Any, ctx: Any, variables: Any) -> Any:
            value = get_obj(doc, ctx, variables)
            if type(value) is dict:
                return value.get(name, UNDEFINED)
            return UNDEFINED

        return Code(member)

    def _index(self, node: ast.Index) -> Code:
        obj, index = self.expr(node.obj), self.expr(node.index)
        if obj.path is not None and type(index.const) is int:
            path = (*obj.path, index.const)
            return Code(_path_getter(path), path=path)
        if obj.const is not _NOT_CONST and index.const is not _NOT_CONST:
            return _constant(_index_value(obj.const, index.const))
        get_obj, get_index = obj.fn, index.fn
        return Code(
            lambda doc, ctx, variables: _index_value(
                get_obj(doc, ctx, variables), get_index(doc, ctx, variables)
            )
        )

    def _unary(self, node: ast.Unary) -> Code:
        operand = self.expr(node.operand)
        if node.op == "+":
            return operand
        if operand.const is not _NOT_CONST:
            return _constant(negate(operand.const))
        get = operand.fn
        return Code(lambda doc, ctx, variables: negate(get(doc, ctx, variables)))

    def _binary(self, node: ast.Binary) -> Code:
        op = node.op
        if op in _ARITHMETIC:
            return self._arithmetic_chain(node)
        left, right = self.expr(node.left), self.expr(node.right)
        if op in _ORDERING:
            fn = self._ordering(op, left.fn, right.fn)
        elif op == "=":
            fn = self._pair(equals, left.fn, right.fn)
        elif op == "<>":
            fn = self._pair(not_equals, left.fn, right.fn)
        else:
            fn = self._arithmetic(op, left.fn, right.fn)
        return self._fold(fn, left, right)

    def _fold(self, fn: Fn, *operands: Code) -> Code:
        if all(o.const is not _NOT_CONST for o in operands):
            try:
                return _constant(fn(None, None, None))
            except Exception:
                return Code(fn)
        return Code(fn)

    def _arithmetic_chain(self, node: ast.Binary) -> Code:
        # `a + b - c * d` is a left-deep spine of Binary nodes; compile it as a loop
        # over its operands, so that 500 terms need no recursion.
        tail: list[tuple[str, ast.Expr]] = []
        head: ast.Expr = node
        while isinstance(head, ast.Binary) and head.op in _ARITHMETIC:
            tail.append((head.op, head.right))
            head = head.left
        tail.reverse()
        first = self.expr(head)
        steps = [(op, self.expr(operand)) for op, operand in tail]
        # Fold a constant prefix: `1 + 2 + x` is `3 + x`.
        while steps and first.const is not _NOT_CONST and steps[0][1].const is not _NOT_CONST:
            op, operand = steps.pop(0)
            first = self._fold(self._arithmetic(op, first.fn, operand.fn), first, operand)
        if not steps:
            return first
        if len(steps) == 1:
            op, operand = steps[0]
            return self._fold(self._arithmetic(op, first.fn, operand.fn), first, operand)
        get_first = first.fn
        rest = tuple((op, operand.fn) for op, operand in steps)
        finish = whole_to_int if self.version != V2015 else _identity

        def chain(doc: Any, ctx: Any, variables: Any) -> Any:
            value = get_first(doc, ctx, variables)
            for op, get in rest:
                value = finish(arithmetic(op, value, get(doc, ctx, variables)))
            return value

        return Code(chain)

    @staticmethod
    def _spine(node: ast.Expr, kind: type[ast.And] | type[ast.Or]) -> list[ast.Expr]:
        """The operands of a left-deep chain ``a OR b OR c`` (or AND), in order."""
        right: list[ast.Expr] = []
        while isinstance(node, kind):
            right.append(node.right)
            node = node.left
        right.append(node)
        right.reverse()
        return right

    @staticmethod
    def _pair(function: Callable[[Any, Any], Any], left: Fn, right: Fn) -> Fn:
        return lambda doc, ctx, variables: function(
            left(doc, ctx, variables), right(doc, ctx, variables)
        )

    @staticmethod
    def _ordering(op: str, left: Fn, right: Fn) -> Fn:
        compare = _ORDERING[op]

        def ordering(doc: Any, ctx: Any, variables: Any) -> Any:
            a = ordering_operand(left(doc, ctx, variables))
            if a is UNDEFINED:
                return UNDEFINED
            b = ordering_operand(right(doc, ctx, variables))
            if b is UNDEFINED:
                return UNDEFINED
            return compare(a, b)

        return ordering

    def _arithmetic(self, op: str, left: Fn, right: Fn) -> Fn:
        if self.version == V2015:
            return lambda doc, ctx, variables: arithmetic(
                op, left(doc, ctx, variables), right(doc, ctx, variables)
            )
        return lambda doc, ctx, variables: whole_to_int(
            arithmetic(op, left(doc, ctx, variables), right(doc, ctx, variables))
        )

    def _and(self, node: ast.And) -> Code:
        operands = [self.expr(o) for o in self._spine(node, ast.And)]
        if len(operands) > 2:
            getters = tuple(o.fn for o in operands)

            def and_all(doc: Any, ctx: Any, variables: Any) -> Any:
                result: Any = True
                for get in getters:
                    value = to_boolean(get(doc, ctx, variables))
                    if value is False:
                        return False
                    if value is UNDEFINED:
                        result = UNDEFINED
                return result

            return self._fold(and_all, *operands)
        left, right = operands
        get_left, get_right = left.fn, right.fn

        # Three-valued, like SQL's NULL: false AND Undefined is false, true AND
        # Undefined is Undefined. AWS documents only the all-Boolean and
        # all-other-value rows of the table; this fills the mixed ones.
        def and_(doc: Any, ctx: Any, variables: Any) -> Any:
            a = to_boolean(get_left(doc, ctx, variables))
            if a is False:
                return False
            b = to_boolean(get_right(doc, ctx, variables))
            if b is False:
                return False
            return UNDEFINED if a is UNDEFINED or b is UNDEFINED else True

        return self._fold(and_, left, right)

    def _or(self, node: ast.Or) -> Code:
        operands = [self.expr(o) for o in self._spine(node, ast.Or)]
        if len(operands) > 2:
            getters = tuple(o.fn for o in operands)

            def or_all(doc: Any, ctx: Any, variables: Any) -> Any:
                result: Any = False
                for get in getters:
                    value = to_boolean(get(doc, ctx, variables))
                    if value is True:
                        return True
                    if value is UNDEFINED:
                        result = UNDEFINED
                return result

            return self._fold(or_all, *operands)
        left, right = operands
        get_left, get_right = left.fn, right.fn

        def or_(doc: Any, ctx: Any, variables: Any) -> Any:
            a = to_boolean(get_left(doc, ctx, variables))
            if a is True:
                return True
            b = to_boolean(get_right(doc, ctx, variables))
            if b is True:
                return True
            return UNDEFINED if a is UNDEFINED or b is UNDEFINED else False

        return self._fold(or_, left, right)

    def _not(self, node: ast.Not) -> Code:
        operand = self.expr(node.operand)
        get = operand.fn

        def not_(doc: Any, ctx: Any, variables: Any) -> Any:
            value = to_boolean(get(doc, ctx, variables))
            return value if value is UNDEFINED else not value

        return self._fold(not_, operand)

    def _in(self, node: ast.In) -> Code:
        left, right = self.expr(node.left), self.expr(node.right)
        get_left, get_right = left.fn, right.fn
        return self._fold(
            lambda doc, ctx, variables: contains(
                get_right(doc, ctx, variables), get_left(doc, ctx, variables)
            ),
            left,
            right,
        )

    def _case(self, node: ast.Case) -> Code:
        subject = self.expr(node.subject).fn
        whens = tuple((self.expr(t).fn, self.expr(r).fn) for t, r in node.whens)
        default = self.expr(node.default).fn if node.default is not None else None

        def case(doc: Any, ctx: Any, variables: Any) -> Any:
            value = subject(doc, ctx, variables)
            if value is UNDEFINED:
                return UNDEFINED
            for test, result in whens:
                candidate = test(doc, ctx, variables)
                if candidate is not UNDEFINED and same(value, candidate):
                    return result(doc, ctx, variables)
            return UNDEFINED if default is None else default(doc, ctx, variables)

        return Code(case)

    def _require_v2016(self, what: str, pos: ast.Pos) -> None:
        if self.version == V2015:
            raise self.error(f"{what} require SQL version {V2016} (this rule uses {V2015})", pos)

    def _objectlit(self, node: ast.ObjectLit) -> Code:
        self._require_v2016("object literals", node.pos)
        pairs = tuple((key, self.expr(value)) for key, value in node.pairs)
        getters = tuple((key, code.fn) for key, code in pairs)

        def build(doc: Any, ctx: Any, variables: Any) -> Any:
            out = {}
            for key, get in getters:
                value = get(doc, ctx, variables)
                if value is not UNDEFINED:
                    out[key] = value
            return out

        return Code(build)

    def _arraylit(self, node: ast.ArrayLit) -> Code:
        self._require_v2016("array literals", node.pos)
        getters = tuple(self.expr(item).fn for item in node.items)

        def build(doc: Any, ctx: Any, variables: Any) -> Any:
            out = []
            for get in getters:
                value = get(doc, ctx, variables)
                if value is not UNDEFINED:
                    out.append(value)
            return out

        return Code(build)

    def _cast(self, node: ast.Cast) -> Code:
        since = _CAST_TYPES.get(node.type_name)
        if since is None:
            choices = ", ".join(sorted(_CAST_TYPES))
            raise self.error(f"cannot cast to '{node.type_name}'; use one of {choices}", node.pos)
        if since == V2016:
            self._require_v2016(f"casts to {node.type_name}", node.pos)
        operand = self.expr(node.expr)
        get, type_name, version = operand.fn, node.type_name, self.version
        return self._fold(
            lambda doc, ctx, variables: cast(get(doc, ctx, variables), type_name, version),
            operand,
        )

    def _call(self, node: ast.Call) -> Code:
        name = node.name
        if name in AWS_ONLY:
            raise self.error(f"{AWS_ONLY[name]}", node.pos)
        if name == "sql_version" and not node.args:
            return _constant(self.version)
        function = FUNCTIONS.get(name)
        if function is None:
            raise self.error(self._unknown_function(name), node.pos)
        count = len(node.args)
        if count < function.min_args or (
            function.max_args is not None and count > function.max_args
        ):
            raise self.error(
                self._arity_message(name, function.min_args, function.max_args), node.pos
            )
        if function.since == V2016:
            self._require_v2016(f"{name}() and its kind", node.pos)
        args = tuple(self.expr(arg) for arg in node.args)
        impl = function.impl
        if function.literal_impl is not None and len(args) > 1 and args[1].const is not _NOT_CONST:
            impl = function.literal_impl
        fn = self._call_closure(impl, tuple(a.fn for a in args), function.context)
        if function.pure and not function.context:
            return self._fold(fn, *args)
        return Code(fn)

    @staticmethod
    def _arity_message(name: str, low: int, high: int | None) -> str:
        if high is None:
            wanted = f"at least {low}"
        elif low == high:
            wanted = str(low)
        else:
            wanted = f"{low} to {high}"
        plural = "" if wanted == "1" else "s"
        return f"{name}() takes {wanted} argument{plural}"

    @staticmethod
    def _unknown_function(name: str) -> str:
        close = difflib.get_close_matches(name, [*FUNCTIONS, "sql_version"], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown function '{name}'{hint}"

    def _call_closure(self, impl: Callable[..., Any], args: tuple[Fn, ...], context: bool) -> Fn:
        # One closure per arity, with the version's result rule folded in, so that a
        # call costs one Python frame plus the function itself. This is the one
        # boundary where a function's unexpected exception (a pathological argument)
        # becomes Undefined, as AWS answers for arguments a function cannot handle;
        # `try` costs nothing in CPython 3.11+ until something is raised.
        finish = finish_2016 if self.version != V2015 else finish_2015
        if context:

            def call_ctx(doc: Any, ctx: Any, variables: Any) -> Any:
                try:
                    return finish(impl(ctx, *[a(doc, ctx, variables) for a in args]))
                except Exception:
                    return UNDEFINED

            return call_ctx
        if len(args) == 0:

            def call0(doc: Any, ctx: Any, variables: Any) -> Any:
                try:
                    return finish(impl())
                except Exception:
                    return UNDEFINED

            return call0
        if len(args) == 1:
            (a0,) = args

            def call1(doc: Any, ctx: Any, variables: Any) -> Any:
                try:
                    return finish(impl(a0(doc, ctx, variables)))
                except Exception:
                    return UNDEFINED

            return call1
        if len(args) == 2:
            a0, a1 = args

            def call2(doc: Any, ctx: Any, variables: Any) -> Any:
                try:
                    return finish(impl(a0(doc, ctx, variables), a1(doc, ctx, variables)))
                except Exception:
                    return UNDEFINED

            return call2
        if len(args) == 3:
            a0, a1, a2 = args

            def call3(doc: Any, ctx: Any, variables: Any) -> Any:
                try:
                    return finish(
                        impl(
                            a0(doc, ctx, variables),
                            a1(doc, ctx, variables),
                            a2(doc, ctx, variables),
                        )
                    )
                except Exception:
                    return UNDEFINED

            return call3

        def call_n(doc: Any, ctx: Any, variables: Any) -> Any:
            try:
                return finish(impl(*[a(doc, ctx, variables) for a in args]))
            except Exception:
                return UNDEFINED

        return call_n

    def _subquery(self, node: ast.Subquery) -> Code:
        self._require_v2016("nested object queries", node.pos)
        from rulebus.sql.select import compile_select

        source = self.expr(node.source).fn
        inner = Compiler(self.text, self.version, self.variables)
        inner.alias = node.alias
        inner.depth = self.depth
        where = inner.predicate(node.where) if node.where is not None else None
        project = compile_select(inner, node.select, nested=True)

        def one(element: Any, ctx: Any, variables: Any) -> Any:
            if where is not None and not where(element, ctx, variables):
                return UNDEFINED
            return project(element, ctx, variables)

        def subquery(doc: Any, ctx: Any, variables: Any) -> Any:
            collection = source(doc, ctx, variables)
            if type(collection) is list:
                results = []
                for element in collection:
                    value = one(element, ctx, variables)
                    if value is not UNDEFINED:
                        results.append(value)
                return results
            if type(collection) is dict:
                return one(collection, ctx, variables)
            return UNDEFINED

        return Code(subquery)

    # Conditions.
    def predicate(self, node: ast.Expr) -> Predicate:
        """Compile a WHERE condition to a closure that returns whether it fires."""
        if isinstance(node, ast.And | ast.Or):
            kind = type(node)
            parts = [self.predicate(o) for o in self._spine(node, kind)]
            if len(parts) == 2:
                left, right = parts
                if kind is ast.And:
                    return lambda doc, ctx, variables: (
                        left(doc, ctx, variables) and right(doc, ctx, variables)
                    )
                return lambda doc, ctx, variables: (
                    left(doc, ctx, variables) or right(doc, ctx, variables)
                )
            tests = tuple(parts)
            if kind is ast.And:
                return lambda doc, ctx, variables: all(t(doc, ctx, variables) for t in tests)
            return lambda doc, ctx, variables: any(t(doc, ctx, variables) for t in tests)
        self._enter(node.pos)
        try:
            return self._condition(node)
        finally:
            self.depth -= 1

    def _condition(self, node: ast.Expr) -> Predicate:
        if isinstance(node, ast.Binary) and node.op in _FLIPPED:
            fast = self._fast_comparison(node)
            if fast is not None:
                return fast
        code = self.expr(node)
        if code.const is not _NOT_CONST:
            fires = truth(code.const)
            return lambda doc, ctx, variables: fires
        get = code.fn
        return lambda doc, ctx, variables: truth(get(doc, ctx, variables))

    def _fast_comparison(self, node: ast.Binary) -> Predicate | None:
        left, right = self.expr(node.left), self.expr(node.right)
        op = node.op
        if left.path is None or right.const is _NOT_CONST:
            left, right, op = right, left, _FLIPPED[op]
        if left.path is None or right.const is _NOT_CONST:
            return None
        constant = right.const
        is_number = type(constant) is int or type(constant) is float
        if not (is_number or type(constant) is str):
            return None
        get = left.fn
        if op in _ORDERING:
            compare = _ORDERING[op]
            bound = ordering_operand(constant)
            if bound is UNDEFINED:
                return lambda doc, ctx, variables: False

            def ordering(doc: Any, ctx: Any, variables: Any) -> bool:
                value = get(doc, ctx, variables)
                t = type(value)
                if t is int or t is float:
                    return compare(value, bound)
                if t is str:
                    number = ordering_operand(value)
                    return number is not UNDEFINED and compare(number, bound)
                return False

            return ordering
        if op == "=":
            if is_number:

                def number_equals(doc: Any, ctx: Any, variables: Any) -> bool:
                    value = get(doc, ctx, variables)
                    return value == constant and type(value) is not bool

                return number_equals
            # Only a str can equal a str in Python, exactly the SQL rule.
            return lambda doc, ctx, variables: get(doc, ctx, variables) == constant
        return lambda doc, ctx, variables: not_equals(get(doc, ctx, variables), constant) is True
