"""The fracture taxonomy: the ordered list of class names the whole consortium shares."""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_CLASSES: tuple[str, ...] = ("fatigue", "ductile", "cleavage", "intergranular")

_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class TaxonomyError(ValueError):
    """The configured class list is unusable."""


def validate_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Check a class list and return it as a tuple.

    Class names become folder names and model output indices, so they must be
    unique lower-case identifiers and there must be at least two of them.

    Raises
    ------
    TaxonomyError
        Naming the offending entry and what a valid list looks like.
    """
    names = tuple(str(c).strip() for c in classes)
    if len(names) < 2:
        raise TaxonomyError(
            f"data.classes must name at least two classes, got {list(names)}; "
            f"the default is {list(DEFAULT_CLASSES)}"
        )
    for name in names:
        if not _CLASS_NAME.match(name):
            raise TaxonomyError(
                f"class name {name!r} in data.classes is not a lower-case identifier "
                "(letters, digits, '-' and '_', starting with a letter)"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaxonomyError(f"data.classes lists {duplicates} more than once")
    return names
