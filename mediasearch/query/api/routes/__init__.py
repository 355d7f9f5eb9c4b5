"""One router per concern; `create_app` includes them in this order (which is the order of /docs)."""

from mediasearch.query.api.routes import duplicates, items, ops, page, search

ROUTERS = (ops.router, search.router, items.router, duplicates.router, page.router)
