"""``python -m compresskit ...`` (also ``torchrun ... -m compresskit run RECIPE``): the command line."""

from compresskit.cli import main

if __name__ == "__main__":
    main()
