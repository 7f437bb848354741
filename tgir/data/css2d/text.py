"""Modification texts of CSS-2D: how they are written and how they are read back.

Grammar (as in TIRG's CSS):
    add [size] [color] (shape|object) [to <pos>]
    remove <ref>
    make <ref> (<color>|<size>)
    <ref> = [pos] [size] [color] (shape|object)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tgir.data.css2d.scene import ATTRIBUTES, COLORS, POSITIONS, SHAPES, SIZES, Obj

OPERATIONS = ("add", "remove", "make")
_VOCAB = {"pos": POSITIONS, "size": SIZES, "color": tuple(COLORS), "shape": SHAPES}


def describe(attrs: dict[str, str]) -> str:
    """Noun phrase for a set of attributes, e.g. ``{"pos": "top-left", "color": "red"}``.

    Returns:
        ``"[pos] [size] [color] (shape|object)"``, e.g. ``"top-left red object"``.
    """
    words = [attrs[a] for a in ("pos", "size", "color") if a in attrs]
    words.append(attrs.get("shape", "object"))
    return " ".join(words)


def add_text(obj: Obj, mention: tuple[str, ...]) -> str:
    """Text that adds ``obj``, mentioning only the attributes in ``mention``."""
    phrase = describe({a: obj.attr(a) for a in mention if a != "pos"})
    return f"add {phrase} to {obj.pos_name}" if "pos" in mention else f"add {phrase}"


def remove_text(obj: Obj, ref: tuple[str, ...]) -> str:
    return "remove " + describe({a: obj.attr(a) for a in ref})


def make_text(obj: Obj, ref: tuple[str, ...], new_value: str) -> str:
    return "make " + describe({a: obj.attr(a) for a in ref}) + " " + new_value


@dataclass(frozen=True)
class ParsedText:
    """A modification text read back: the operation and the attributes it names.

    ``attrs`` are the attributes of the added object (``add``) or of the referred object
    (``remove``/``make``); ``new`` holds the changed attribute of ``make``, e.g. ``{"color": "red"}``.
    """

    op: str
    attrs: dict[str, str] = field(default_factory=dict)
    new: dict[str, str] = field(default_factory=dict)

    def refers_to(self, obj: Obj) -> bool:
        """Whether ``obj`` has every attribute the text names."""
        return all(obj.attr(k) == v for k, v in self.attrs.items())


def _attribute_of(word: str) -> str | None:
    for name, values in _VOCAB.items():
        if word in values:
            return name
    return None


def _phrase(words: list[str], text: str) -> dict[str, str]:
    if not words or words[-1] not in (*SHAPES, "object"):
        raise ValueError(f"{text!r}: a reference must end with a shape or 'object'")
    attrs: dict[str, str] = {}
    for word in words:
        if word == "object":
            continue
        name = _attribute_of(word)
        if name is None or name in attrs:
            raise ValueError(f"{text!r}: unexpected word {word!r}")
        attrs[name] = word
    return attrs


def parse_text(text: str) -> ParsedText:
    """Parse a CSS-2D modification text.

    Args:
        text: e.g. ``"make middle-left large circle green"``.

    Returns:
        The operation and named attributes.

    Raises:
        ValueError: The text does not follow the grammar.
    """
    words = text.split()
    if not words or words[0] not in OPERATIONS:
        raise ValueError(f"{text!r}: must start with one of {OPERATIONS}")
    op, rest = words[0], words[1:]
    if op == "add":
        pos = {}
        if len(rest) >= 2 and rest[-2] == "to":
            if rest[-1] not in POSITIONS:
                raise ValueError(f"{text!r}: unknown position {rest[-1]!r}")
            pos, rest = {"pos": rest[-1]}, rest[:-2]
        attrs = _phrase(rest, text)
        if "pos" in attrs:
            raise ValueError(f"{text!r}: 'add' names its position with 'to <pos>'")
        attrs.update(pos)
        if not attrs:
            raise ValueError(f"{text!r}: 'add' must name at least one attribute")
        return ParsedText(op, attrs)
    if op == "remove":
        return ParsedText(op, _phrase(rest, text))
    if len(rest) < 2:
        raise ValueError(f"{text!r}: 'make' needs a reference and a new value")
    name = _attribute_of(rest[-1])
    if name not in ("color", "size"):
        raise ValueError(f"{text!r}: 'make' must end with a colour or a size")
    return ParsedText(op, _phrase(rest[:-1], text), {name: rest[-1]})


__all__ = ["ATTRIBUTES", "OPERATIONS", "ParsedText", "add_text", "make_text", "parse_text", "remove_text"]
