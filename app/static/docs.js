// The API docs page (/docs): Swagger UI from the locally served, pinned bundle.
// A file rather than an inline script, so the page's Content-Security-Policy needs no exceptions.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
