"""Service starters and the Stripe stub shared by the tests, `make dev` and the benchmarks."""
