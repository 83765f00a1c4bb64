package httpapi

import _ "embed"

// openAPIDocument is the OpenAPI 3 description of every route, served at GET /openapi.json.
// TestOpenAPI checks that it is valid and names exactly the routes of Server.Routes.
//
//go:embed openapi.json
var openAPIDocument []byte
