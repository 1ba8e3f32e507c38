"""The five architectures, one module each; importing this package registers them all.

``ARCHITECTURES`` (id → builder, paper, loss kind) and ``build_model`` come from
``registry``; the import order below is the order the README and reports list them in.
"""
from __future__ import annotations

from models.architectures import deeppose, tompson, cpm, ief, hourglass  # noqa: F401  (registers)
from models.architectures.registry import ARCHITECTURES, Architecture, build_model

__all__ = ["ARCHITECTURES", "Architecture", "build_model"]
