"""Optional dependencies: import them where a feature uses them, with an error naming the extra.

The core install (``pip install manifoldnn``) carries torch, geoopt, numpy, scipy, scikit-learn and
tqdm; everything else is an extra (``pip install "manifoldnn[speech]"``). A feature that needs an
extra imports it through :func:`require` at call time, never at module import, so that every
subpackage imports from a plain install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module``, or raise ``ImportError`` saying which extra installs it.

    Args:
        module: the importable name, e.g. ``"librosa"`` or ``"ot"``.
        extra: the manifoldnn extra that installs it, e.g. ``"speech"``.
        feature: what needs it, for the message. Default: ``None`` (the module's name).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        what = feature or module
        raise ImportError(
            f'{what} needs the optional dependency {module!r}: pip install "manifoldnn[{extra}]"'
        ) from error
