"""Helpers every layer may use; they import nothing else of compresskit.

* :mod:`.atomic` -- atomic file writes (temporary file + rename) and stale temporaries;
* :mod:`.finite` -- the non-finite entries of nested tensors;
* :mod:`.images` -- image sizes from the header, the pixel limit every image reader checks;
* :mod:`.forward` -- eval-mode forwards, forwards with hooks;
* :mod:`.optional` -- optional dependencies and the extra that provides each;
* :mod:`.safe_yaml` -- YAML with size, depth and node limits, no tags;
* :mod:`.logs` -- forwarding library log records to a run's log;
* :mod:`.lazy` -- the lazily imported public names of every sub-package;
* :mod:`.imports` -- importing ``package.module:callable`` targets;
* :mod:`.moved` -- the old (0.1) module paths, forwarding with a DeprecationWarning.

These are internal helpers, not a stable API: import them by module.
"""
