"""``python -m distributed_center``: the same as the ``dcenter`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="dcenter")
