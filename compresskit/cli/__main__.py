"""``python -m compresskit.cli ...``: the command line (as ``python -m compresskit``)."""

from compresskit.cli import main

if __name__ == "__main__":
    main()
