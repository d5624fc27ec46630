"""The HTTP/JSON service: ``escalation-rules serve`` (needs the ``serve`` extra: FastAPI and uvicorn).

:mod:`.app` builds the application, :mod:`.auth` reads the users file,
:mod:`._trials` is the one place that calls the trial store, and the meeting
page's template and assets ship in ``templates/`` and ``static/``.  Nothing
here imports FastAPI at import time of the package.
"""
