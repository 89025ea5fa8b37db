"""The HTTP layer of the service: FastAPI routers, dependencies, forms, error handlers.

These modules import FastAPI and Starlette at the top (the optional ``serve`` extra); only
``abdnet.service.app.create_app`` imports them, when it builds an app. One router per
resource:

- ``system``: ``GET /healthz``, ``GET /info``, ``GET /metrics``
- ``gallery``: ``POST /gallery``, ``GET /gallery``, ``GET /gallery/{id}``,
  ``GET /gallery/{id}/image``, ``DELETE /gallery/{id}``
- ``search``: ``POST /search``, ``POST /search/sightings``; ``verify``: ``POST /verify``;
  ``page``: ``GET /`` and ``/static``
"""
