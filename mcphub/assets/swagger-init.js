// Starts Swagger UI on /docs and /{server}/docs (mcphub/pages.py). A file, not an inline script, so the
// pages' Content-Security-Policy can say script-src 'self'. The document to show is the page's
// data-spec-url; validatorUrl null: no badge fetched from an outside validator.
"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
