"""Methods by name."""

from jaxcl.methods.align_uniform import ALIGN_UNIFORM
from jaxcl.methods.alpha_cl import ALPHA_CL, QUADRATIC
from jaxcl.methods.base import Method
from jaxcl.methods.moco import MOCOV2, MOCOV3
from jaxcl.methods.simclr import SIMCLR
from jaxcl.methods.supcon import SUPCON

#: Every method by its config name; a new method is one more entry.
METHODS = {m.name: m for m in (SIMCLR, MOCOV2, MOCOV3, ALIGN_UNIFORM, SUPCON, ALPHA_CL, QUADRATIC)}
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    """Returns the method called ``name`` (one of ``METHOD_NAMES``)."""
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; use one of {', '.join(METHOD_NAMES)}.")
    return METHODS[name]
