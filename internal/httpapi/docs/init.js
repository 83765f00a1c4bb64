// Starts Swagger UI on the loader's own OpenAPI document. A file of its own rather than an
// inline script, so the page's Content-Security-Policy can forbid inline scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json", // relative to /docs: the loader's GET /openapi.json
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // no call to validator.swagger.io: a device in the field is offline
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
