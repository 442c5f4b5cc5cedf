"""ASP.NET Core route templates, as the Functions host matches HTTP trigger routes.

Supported: literal segments (matched case-insensitively), ``{name}``, optional ``{name?}``,
defaults ``{name=value}``, catch-all ``{*rest}`` / ``{**rest}`` as the last segment, parameters
inside a segment (``{name}.{ext}``) and the common inline constraints (``int``, ``long``,
``bool``, ``guid``, ``alpha``, ``double``/``float``/``decimal``, ``min``, ``max``, ``range``,
``minlength``, ``maxlength``, ``length``, ``regex``). A trailing slash is ignored.

Candidates are ordered by ASP.NET's inbound precedence (literal before constrained parameter
before parameter before catch-all, segment by segment); the first whose path and method
match wins. A path that matches only with another method is a 404, as in the real host.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from sandbox.host.config import HostConfigurationError

_PARAMETER = re.compile(r"\{([^{}]+)\}")
_CONSTRAINT = re.compile(r"^(\w+)(?:\((.*)\))?$", re.S)

Check = Callable[[str], bool]


def _is_int(value: str, bits: int) -> bool:
    if not re.fullmatch(r"[+-]?\d+", value):
        return False
    number = int(value)
    return bool(-(2 ** (bits - 1)) <= number < 2 ** (bits - 1))


def _is_float(value: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value) is not None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value.strip("{}()"))
    except ValueError:
        return False
    return True


def _constraint(text: str) -> Check:
    match = _CONSTRAINT.match(text)
    if not match:
        raise HostConfigurationError(f"invalid route constraint {text!r}")
    name, argument = match.group(1).lower(), match.group(2)
    args = [a.strip() for a in argument.split(",")] if argument is not None and name != "regex" else []
    simple: dict[str, Check] = {
        "int": lambda v: _is_int(v, 32),
        "long": lambda v: _is_int(v, 64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "guid": _is_guid,
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "double": _is_float,
        "float": _is_float,
        "decimal": _is_float,
    }
    if name in simple and argument is None:
        return simple[name]
    if name == "regex" and argument is not None:
        pattern = re.compile(argument, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    numbers = [int(a) for a in args] if args and all(re.fullmatch(r"-?\d+", a) for a in args) else None
    if numbers is not None:
        if name == "min" and len(numbers) == 1:
            return lambda v: _is_int(v, 64) and int(v) >= numbers[0]
        if name == "max" and len(numbers) == 1:
            return lambda v: _is_int(v, 64) and int(v) <= numbers[0]
        if name == "range" and len(numbers) == 2:
            return lambda v: _is_int(v, 64) and numbers[0] <= int(v) <= numbers[1]
        if name == "minlength" and len(numbers) == 1:
            return lambda v: len(v) >= numbers[0]
        if name == "maxlength" and len(numbers) == 1:
            return lambda v: len(v) <= numbers[0]
        if name == "length" and len(numbers) in (1, 2):
            low, high = (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
            return lambda v: low <= len(v) <= high
    raise HostConfigurationError(f"unsupported route constraint {text!r}")


def _split_constraints(body: str) -> list[str]:
    """``id:int:min(1)`` → ["id", "int", "min(1)"], keeping colons inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in body:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


@dataclass
class Parameter:
    name: str
    optional: bool = False
    default: str | None = None
    catch_all: bool = False
    checks: list[Check] = field(default_factory=list)

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.checks)


def _parameter(body: str) -> Parameter:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    default = None
    if "=" in body:
        body, default = body.split("=", 1)
    name, *constraints = _split_constraints(body)
    optional = name.endswith("?")
    name = name.rstrip("?")
    if not re.fullmatch(r"[A-Za-z_][\w]*", name):
        raise HostConfigurationError(f"invalid route parameter name {name!r}")
    return Parameter(
        name=name,
        optional=optional or default is not None,
        default=default,
        catch_all=catch_all,
        checks=[_constraint(c) for c in constraints],
    )


@dataclass
class Segment:
    """One path segment: a literal, one parameter, or literals and parameters mixed."""

    text: str
    parameters: list[Parameter]
    regex: re.Pattern[str] | None  # for mixed segments

    @property
    def kind(self) -> int:
        """ASP.NET inbound precedence digit (lower wins)."""
        if not self.parameters:
            return 1
        if self.regex is not None:
            return 2
        parameter = self.parameters[0]
        if parameter.catch_all:
            return 5
        return 3 if parameter.checks else 4

    @classmethod
    def parse(cls, text: str) -> Segment:
        found = list(_PARAMETER.finditer(text))
        if not found:
            if "{" in text or "}" in text:
                raise HostConfigurationError(f"invalid route segment {text!r}")
            return cls(text, [], None)
        parameters = [_parameter(m.group(1)) for m in found]
        if len(found) == 1 and found[0].span() == (0, len(text)):
            return cls(text, parameters, None)
        if any(p.catch_all for p in parameters):
            raise HostConfigurationError(f"a catch-all parameter must be a whole segment: {text!r}")
        pattern, position = "", 0
        for match, parameter in zip(found, parameters, strict=True):
            pattern += re.escape(text[position : match.start()]) + f"(?P<{parameter.name}>.+?)"
            position = match.end()
        pattern += re.escape(text[position:])
        return cls(text, parameters, re.compile(f"^{pattern}$", re.IGNORECASE))


class RouteTemplate:
    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        self.segments = [Segment.parse(part) for part in self.template.split("/")] if self.template else []
        names = [p.name.lower() for s in self.segments for p in s.parameters]
        if len(names) != len(set(names)):
            raise HostConfigurationError(f"route {template!r} repeats a parameter name")
        for segment in self.segments[:-1]:
            if any(p.catch_all for p in segment.parameters):
                raise HostConfigurationError(f"route {template!r}: a catch-all parameter must come last")

    @property
    def precedence(self) -> tuple[int, ...]:
        return tuple(segment.kind for segment in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a path (relative to the route prefix, still percent-encoded), or None."""
        stripped = path.strip("/")
        parts = stripped.split("/") if stripped else []
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.parameters and segment.parameters[0].catch_all and segment.regex is None:
                parameter = segment.parameters[0]
                rest = "/".join(unquote(p) for p in parts[index:])
                if rest:
                    if not parameter.accepts(rest):
                        return None
                    values[parameter.name] = rest
                elif parameter.default is not None:
                    values[parameter.name] = parameter.default
                return values
            if index >= len(parts):
                if all(p.optional for s in self.segments[index:] for p in s.parameters) and all(
                    s.parameters and s.regex is None for s in self.segments[index:]
                ):
                    for later in self.segments[index:]:
                        for parameter in later.parameters:
                            if parameter.default is not None:
                                values[parameter.name] = parameter.default
                    return values
                return None
            part = unquote(parts[index])
            if not segment.parameters:
                if part.lower() != segment.text.lower():
                    return None
            elif segment.regex is None:
                parameter = segment.parameters[0]
                if part == "" or not parameter.accepts(part):
                    return None
                values[parameter.name] = part
            else:
                found = segment.regex.match(part)
                if not found:
                    return None
                for parameter in segment.parameters:
                    value = found.group(parameter.name)
                    if not parameter.accepts(value):
                        return None
                    values[parameter.name] = value
        if len(parts) > len(self.segments):
            return None
        return values
