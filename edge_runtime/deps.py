"""Lazy imports of optional packages with an error that says how to get them."""

from __future__ import annotations

import importlib
from types import ModuleType

from edge_runtime.errors import MissingDependency


def require(module: str, *, extra: str | None = None, purpose: str = "", hint: str = "") -> ModuleType:
    """Import `module` or raise MissingDependency naming the extra or SDK that provides it.

    Args:
        module: dotted module name, e.g. "paho.mqtt.client".
        extra: the pip extra that installs it ("edge", "train", ...).
        purpose: what it is needed for, shown in the message.
        hint: how to get it, replacing the pip advice (vendor SDKs such as PySpin).

    Raises:
        MissingDependency: the import failed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        if hint:
            how = hint
        elif extra:
            how = f"install it with: pip install 'clipinspect[{extra}]'"
        else:
            how = f"install {module}"
        raise MissingDependency(f"{module} is needed{what} but cannot be imported ({exc}); {how}") from None
