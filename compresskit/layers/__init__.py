"""Layer rules: how each module type's parameters follow a channel axis, and the two channel ops
a model needs to stay prunable.

* :mod:`.rules` -- :class:`LayerRule` per module type (:data:`LAYER_RULES`, :func:`rule_for`): which
  parameters follow the input / output channel axis, how to slice them;
* :mod:`.pool` -- :class:`ChannelPool`, a channel mean/max that pruning keeps exact (CBAM's spatial gate);
* :mod:`.shuffle` -- :class:`ChannelShuffle`, a channel permutation seen as one traced op;
* :mod:`.tracing` -- the marker that makes those two single nodes while groups are traced.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ATTENTION_HEADS": "rules", "AXES": "rules", "AttentionHeadsRule": "rules", "Axis": "rules", "BOTH": "rules",
    "BatchNormRule": "rules", "ChannelPoolRule": "rules", "ChannelShuffleRule": "rules", "ConvRule": "rules",
    "Coupling": "rules", "IN": "rules", "LAYER_RULES": "rules", "LayerRule": "rules", "LinearRule": "rules",
    "MultiheadAttentionRule": "rules", "NormalizationRule": "rules", "OUT": "rules", "PReLURule": "rules",
    "ParamCount": "rules", "axis_size": "rules", "check_indices": "rules", "is_attention": "rules",
    "is_depthwise": "rules", "keep_parameter": "rules", "rule_for": "rules",
    "ChannelPool": "pool", "REDUCTIONS": "pool",
    "ChannelShuffle": "shuffle",
})
