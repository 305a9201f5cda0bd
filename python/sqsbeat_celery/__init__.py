"""Celery side of sqsbeat.

* :func:`install` diverts task messages whose ETA lies beyond SQS's reach to
  sqsbeat's intake queue (INTAKE.md is the contract);
* :func:`cancel` cancels such a task by its Celery id;
* ``python -m sqsbeat_celery export-schedule MODULE:APP`` prints an app's
  ``beat_schedule`` as a sqsbeat schedule file.
"""

from .cancel import cancel
from .divert import (DEFAULT_DIVERT_AFTER, DEFAULT_INTAKE_QUEUE, INTAKE_HEADER,
                     INTAKE_VERSION, install)

__all__ = [
    "install",
    "cancel",
    "INTAKE_HEADER",
    "INTAKE_VERSION",
    "DEFAULT_INTAKE_QUEUE",
    "DEFAULT_DIVERT_AFTER",
]
__version__ = "0.1.0"
