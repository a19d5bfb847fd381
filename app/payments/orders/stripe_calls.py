"""The Stripe objects that pay for an order: Checkout Sessions, PaymentIntents, refunds.

Every POST carries an idempotency key derived from our own record id, so a retry (by
the Stripe library, or by a client repeating its request) never creates a second
object at Stripe.
"""

from __future__ import annotations

import stripe

from payments.errors import ApiError
from payments.orders.service import PricedLine


def idempotency_options(record: str, record_id, action: str) -> dict:
    """Request options for a Stripe POST about one of our records, e.g. order-<uuid>-refund."""
    return {"idempotency_key": f"{record}-{record_id}-{action}"}


def stripe_unavailable(exc: stripe.StripeError) -> ApiError:
    """Stripe refused or could not be reached: 502, without Stripe's internal details."""
    return ApiError(502, "payment_provider_error",
                    "The payment provider could not process the request; try again shortly.")


async def create_checkout_session(client: stripe.StripeClient, *, order: dict, lines: list[PricedLine],
                                  customer_id: str, success_url: str, cancel_url: str):
    order_id = str(order["id"])
    # Our order id travels in the metadata of every object Stripe creates for it, so
    # each webhook can find the order.
    metadata = {"order_id": order_id}
    params: dict = {
        "mode": order["mode"],
        "customer": customer_id,
        "client_reference_id": order_id,
        "line_items": [{"price": line.stripe_price_id, "quantity": line.quantity} for line in lines],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "metadata": metadata,
    }
    if order["mode"] == "payment":
        params["payment_intent_data"] = {"metadata": metadata}
    else:
        params["subscription_data"] = {"metadata": metadata}
    return await client.v1.checkout.sessions.create_async(
        params, idempotency_options("order", order_id, "checkout-session"))


async def create_payment_intent(client: stripe.StripeClient, *, order: dict, customer_id: str):
    order_id = str(order["id"])
    params = {
        "amount": order["amount_total"],
        "currency": order["currency"],
        "customer": customer_id,
        # The embedded flow collects a card with the card element.
        "payment_method_types": ["card"],
        "metadata": {"order_id": order_id},
    }
    return await client.v1.payment_intents.create_async(
        params, idempotency_options("order", order_id, "payment-intent"))


async def create_refund(client: stripe.StripeClient, *, order: dict):
    """A full refund of the order's payment; one per order, whatever the retries."""
    order_id = str(order["id"])
    params = {"payment_intent": order["stripe_payment_intent_id"], "metadata": {"order_id": order_id}}
    return await client.v1.refunds.create_async(params, idempotency_options("order", order_id, "refund"))
