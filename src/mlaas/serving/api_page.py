"""The OpenAPI page and spec as the service serves them: complete offline, nothing third-party.

BentoML's page loads Google Tag Manager from the internet, Swagger UI adds a badge image from
validator.swagger.io whenever the page is opened by an address other than localhost, and the
spec leaves every request body optional, so an empty POST passes for a valid request
(schemathesis ST202). The page here loads BentoML's bundled Swagger UI from the server itself.
"""

from __future__ import annotations

from typing import Any

API_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>{title}</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png"
      sizes="32x32" media="(prefers-color-scheme: light)" />
    <link rel="icon" type="image/png" href="./static_content/favicon-dark-32x32.png"
      sizes="32x32" media="(prefers-color-scheme: dark)" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {{
        window.ui = SwaggerUIBundle({{
          url: "./docs.json",
          dom_id: "#swagger-ui",
          deepLinking: true,
          validatorUrl: "none",
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          plugins: [SwaggerUIBundle.plugins.DownloadUrl],
          layout: "StandaloneLayout",
        }});
      }};
    </script>
  </body>
</html>
"""
"""BentoML's page (`main-openapi.html`) without the tag manager, the GitHub corner and the
validator badge; `{title}` is the service's name."""


def api_page(title: str) -> str:
    from html import escape

    return API_PAGE.format(title=escape(title))


def with_required_bodies(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every operation's request body marked required: each API takes a JSON
    object, and a request without one is refused."""
    paths = {
        path: {
            method: (
                {**operation, "requestBody": {**operation["requestBody"], "required": True}}
                if isinstance(operation, dict) and "requestBody" in operation
                else operation
            )
            for method, operation in item.items()
        }
        for path, item in spec.get("paths", {}).items()
    }
    return {**spec, "paths": paths}
