"""Models and their weights: building from a spec, saving and loading pruned models, recipe weights.

* :mod:`.spec` -- ``torchvision:NAME``, ``timm:NAME``, ``package.module:callable`` model specs;
* :mod:`.persist` -- :func:`save_pruned` / :func:`load_pruned` (builder reference + pruning history +
  state dict; only trusted builders are imported);
* :mod:`.released` -- ``NAME:released``: released weights declared by model families, fetched into the
  torch hub cache and hash-checked;
* :mod:`.weights` -- weights files a recipe names: loading, checking, inheriting by name and shape;
* :mod:`.bypass` -- declared optional blocks and their parameter-free stand-ins.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "BUILDER_ENTRY_POINTS": "persist", "FORMAT": "persist", "TRUSTED_BUILDERS": "persist",
    "UntrustedBuilderError": "persist", "declared_builders": "persist", "is_trusted": "persist",
    "load_pruned": "persist", "save_pruned": "persist", "trust_builder": "persist",
    "ModelSpec": "spec", "WEIGHT_SUFFIXES": "spec", "build": "spec", "load_state_dict": "spec",
    "parse_spec": "spec", "resolve_spec": "spec",
    "RELEASED": "released", "ReleasedWeights": "released", "fetch_released": "released",
    "released_weights": "released",
    "InheritSummary": "weights", "check_checkpoints": "weights", "check_state_dict": "weights",
    "inherit_matching": "weights", "load_weights": "weights", "load_state_dict_file": "weights",
    "BYPASS_MODES": "bypass", "Bypass": "bypass", "bypass_blocks": "bypass", "drop_bypassed": "bypass",
    "fit_patterns": "bypass", "fit_specs": "bypass", "optional_blocks": "bypass",
})
