"""Reading untrusted text in bounded time and memory: YAML configs, ``--set`` values and
checkpoint metadata.

Each reader refuses hostile input with a :class:`rlnorm.errors.ConfigError` (or the
caller's own error) before it can hang or exhaust the stack: the text is at most a given
size, YAML aliases are refused (the 600-byte "billion laughs" expands to a billion
entries when anything walks it), and nesting is at most ``MAX_DEPTH`` deep (PyYAML's
composer and every recursive walk of the data would otherwise hit a ``RecursionError``).
:func:`describe` keeps error messages short whatever the value's size.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import yaml

from rlnorm.errors import ConfigError

#: The largest config file or ``--set`` value read, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: The deepest nesting of mappings and lists in a config (or checkpoint metadata).
MAX_DEPTH = 32
_BRACKETS = re.compile(r"[^\[\]{}]+")
#: The largest integer any config value may hold (torch's int64).
MAX_INT = 2**63 - 1


def describe(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of ``value`` for an error message, bounded whatever its size: a
    100,000-digit integer or a million-entry list must not make the message itself slow."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (JSON-like data) nests lists and dicts more than ``limit`` deep,
    found without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and nesting deeper than ``MAX_DEPTH``.

    Aliases are refused outright: a config never needs them, and ten nested aliases of ten
    entries each (the "billion laughs", 600 bytes) expand to a billion when anything walks
    the data. The depth is counted while composing, before PyYAML's recursive composer can
    exhaust Python's stack.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"YAML aliases (*name) are not allowed in a config (line {mark.line + 1}): "
                "write the value out"
            )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"YAML nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, what: str) -> Any:
    """Parse ``text`` (named ``what`` in errors) with the bounded safe loader: at most
    ``MAX_CONFIG_BYTES``, no aliases, at most ``MAX_DEPTH`` deep. Every failure is a
    :class:`ConfigError` with the line, in time linear in the size of ``text``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what}: {len(text)} characters, more than a config may hold ({MAX_CONFIG_BYTES})"
        )
    # PyYAML's scanner is quadratic in the depth of flow collections ("[[[[..."), before
    # the composer's depth check is reached: count brackets first (in quoted strings too,
    # so this bound is loose: a config needs neither 4 * MAX_DEPTH brackets open at once).
    brackets = _BRACKETS.sub("", text)
    if brackets and max(accumulate(1 if b in "[{" else -1 for b in brackets)) > 4 * MAX_DEPTH:
        raise ConfigError(f"{what}: YAML nested more than {MAX_DEPTH} levels deep")
    loader = None
    try:
        loader = _BoundedLoader(text)  # reading starts here: a control character is refused
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what}: malformed YAML{where}: {problem}") from None
    except (ValueError, OverflowError, RecursionError) as e:
        # int() of a literal over Python's digit limit, a timestamp out of range, ...
        raise ConfigError(f"{what}: a value cannot be read: {describe(str(e), 120)}") from None
    finally:
        if loader is not None:
            loader.dispose()
