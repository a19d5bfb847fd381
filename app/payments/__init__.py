"""The payment app: a Starlette service for a Stripe-backed shop.

Start with `payments.app.create_app`; the CLI lives in `payments.__main__`.
"""
