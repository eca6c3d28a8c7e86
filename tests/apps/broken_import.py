"""An app module whose import fails: the worker must exit 4 and the master stop with 4."""

import this_module_does_not_exist_anywhere  # noqa: F401

app = None
