"""compresskit: structured pruning that never breaks a model.

Public API is re-exported here as the modules land (see docs/DESIGN.md).
"""
