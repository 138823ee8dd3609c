"""`newsletter serve`: the Starlette app, its routes and its pages."""
