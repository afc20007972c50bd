"""``python -m distributed_worker CENTER_ADDRESS``: same as the ``dworker`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="dworker")
