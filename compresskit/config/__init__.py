"""Recipes: plain YAML files turned into frozen, validated dataclasses.

Users import the public names from :mod:`compresskit.recipe`; the package splits the work, with
dependencies in one direction (each module imports only those above it):

* :mod:`~compresskit.config.errors` -- :class:`RecipeError`, key paths, provenance of values;
* :mod:`~compresskit.config.constraints` -- numeric ranges fields declare in their metadata;
* :mod:`~compresskit.config.schema` -- the section dataclasses and :class:`Recipe`;
* :mod:`~compresskit.config.resolve` -- ``module:callable`` strings and the named tasks, shared with
  :mod:`compresskit.persist`;
* :mod:`~compresskit.config.validate` -- the one place values are checked;
* :mod:`~compresskit.config.compose` -- YAML files, ``extends``, profiles, ``--set`` overrides;
* :mod:`~compresskit.config.load` -- :func:`load_recipe`: compose, validate, resolve.

Importing this package imports none of them.
"""
