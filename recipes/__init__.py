"""The recipes, shipped inside the package as ``compresskit.recipes`` (``compresskit recipes`` lists them).

This folder holds YAML files only; ``pyproject.toml`` maps it into the wheel, so a recipe exists once.
"""
