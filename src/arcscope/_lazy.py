"""Lazy package attributes: a package's public names resolve from their submodules on first use.

So ``import arcscope.rnn.config`` (say, for the CLI's option defaults) does not import torch through the
package's ``__init__``. Used by every package whose submodules are heavy.
"""

from __future__ import annotations

import importlib
import pkgutil
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to its submodule."""
    module = importlib.import_module(package)
    _keep_names_over_submodules(module, names)

    def __getattr__(name: str) -> Any:
        sub = names.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *names})

    return __getattr__, __dir__


def _keep_names_over_submodules(module: types.ModuleType, names: Mapping[str, str]) -> None:
    """Stop a submodule's import from hiding a public name it shares (``rnn.train`` the function, not the module).

    Importing ``package.sub`` binds the module as the package's attribute ``sub``; where ``sub`` is also a
    public name (``train``, ``zoo``, ``evaluate``) that binding would hide it from ``__getattr__`` for good.
    """
    subs = {info.name for info in pkgutil.iter_modules(getattr(module, "__path__", []))}
    shared = frozenset(subs & set(names))
    if not shared:
        return

    class _Package(type(module)):  # type: ignore[misc]
        def __setattr__(self, name: str, value: Any) -> None:
            if name in shared and isinstance(value, types.ModuleType):
                return
            super().__setattr__(name, value)

    module.__class__ = _Package
