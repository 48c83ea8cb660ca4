"""Coupled channel sets: which channels of which layers must be removed together.

:func:`find_groups` traces the model (Torch-Pruning's dependency graph plus our own routing of
concat, split, reshape, shuffle and attention), merges coupled producers into sets, splits them into
cells that must be removed whole, and verifies on random probes that soft-zeroing equals removal.
Modules: :mod:`.find` (the public entry point), :mod:`.channel_group` (:class:`ChannelGroup` and the other
data types), :mod:`.surgery` (channel
ops: zero, remove, exactness checks -- also used by pruning and persistence), and the private steps
``_graph`` -> ``_depgraph`` / ``_routing`` / ``_channel_ops`` -> ``_coupling`` / ``_sets`` /
``_heads`` -> ``_matching`` -> ``_verify`` / ``_removal`` (``_tp_internals`` wraps the Torch-Pruning
internals used).
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ChannelGroup": "channel_group", "ChannelGroups": "channel_group", "LayerGroupSpec": "channel_group",
    "SkippedCoupling": "channel_group", "UnprunableWarning": "channel_group",
    "cell_removal_counts": "find", "channels_to_remove": "find", "find_groups": "find",
    "round_channels": "find", "round_removal": "find",
})
