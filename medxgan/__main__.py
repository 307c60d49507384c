"""``python -m medxgan``: the ``medxgan`` command line (:func:`flows.cli.main`), for machines
where the console script is not on ``PATH`` (a worker image, a venv not activated).

The only module of ``medxgan/`` that reaches into ``flows/``: it is an entry point, run as a
script and never imported by the library, so the library's dependencies still point one way
(flows -> tasks -> medxgan).
"""

import sys

from flows.cli import main

if __name__ == "__main__":
    sys.exit(main())
