"""HTTP routers of the preprocessor service, one module per resource."""
