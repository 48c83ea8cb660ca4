"""Reference models that use compresskit exactly as an outside user would."""
