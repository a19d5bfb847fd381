"""HTTP routes, one module per group. Each module exports `routes: list`;
`payments.app.ROUTE_MODULES` lists the modules that are served."""
