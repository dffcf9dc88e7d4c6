"""GraphiQL, the GraphQL explorer that ``GET /v1/graphql`` serves to a browser.

The page is strawberry's GraphiQL template (GraphiQL and React from unpkg, pinned with subresource
integrity), adapted: its title, no WebSocket subscriptions (the API has none), and the headers
pane filled with the API key header to complete. It is the same static page for everyone: it
carries no data, and every query it sends is an ordinary ``POST /v1/graphql`` with the key.
"""

from __future__ import annotations

import json
from functools import cache

from strawberry.http.ides import get_graphql_ide_html

#: What the headers pane holds until the user types their key (browsers keep what they type).
DEFAULT_HEADERS = json.dumps({"X-API-Key": "<your API key>"}, indent=2)

#: The query the editor opens with (under the template's explanations).
FIRST_QUERY = "{\n  devices {\n    id\n    readings { metric value }\n  }\n}\n"

#: ``(what the template says, what we serve instead)``; each must be found exactly once.
_EDITS = (
    ("<title>Strawberry GraphiQL</title>", "<title>hivepipe GraphiQL</title>"),
    ("# Welcome to GraphiQL 🍓", "# hivepipe GraphQL: put your API key in the Headers pane below"),
    ("`;\n\n      // Parse URL parameters", f"{FIRST_QUERY}`;\n\n      // Parse URL parameters"),
    ("        subscriptionUrl,\n", ""),
    (
        "      const subscriptionUrl = httpUrlToWebSockeUrl(fetchURL);\n",
        f"      const DEFAULT_HEADERS = {json.dumps(DEFAULT_HEADERS)};\n",
    ),
    (
        "          headers: headers,\n",
        "          headers: headers,\n          defaultHeaders: DEFAULT_HEADERS,\n",
    ),
)


@cache
def graphiql_page() -> str:
    """The HTML of the explorer page."""
    html = get_graphql_ide_html("graphiql")
    for before, after in _EDITS:
        if html.count(before) != 1:  # strawberry changed its template: adapt _EDITS
            raise RuntimeError(f"GraphiQL template: {before.strip()!r} not found once")
        html = html.replace(before, after)
    return html
