"""navai's HTTP routes as data, and the rules of a request: body, CORS, the OpenAPI document."""
