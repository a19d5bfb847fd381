"""Tests of the CI side: the GitHub workflows (.github/workflows) and the smoke test
(scripts/smoke.py) that the deploy workflow runs after each deploy."""
