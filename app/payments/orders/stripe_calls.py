"""The Stripe objects that pay for an order: Checkout Sessions, PaymentIntents, refunds.

Every POST carries an idempotency key derived from our own record id, so a retry (by
the Stripe library, or by a client repeating its request, which resumes the same order)
never creates a second object at Stripe. The parameters come from the stored order alone
(its items, amount, currency), so a resumed call sends exactly what the first one sent,
as Stripe requires for a repeated key.
"""

from __future__ import annotations

import stripe

from payments.errors import ApiError
from payments.idempotency import FinalError

# Stripe may have done what was asked, or not: no answer (network, timeout), its own 5xx
# or 409, or its rate limit. The order stays pending and the retry resumes it.
UNANSWERED = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError, TimeoutError)


def idempotency_options(record: str, record_id, action: str) -> dict:
    """Request options for a Stripe POST about one of our records, e.g. order-<uuid>-refund."""
    return {"idempotency_key": f"{record}-{record_id}-{action}"}


def stripe_unavailable(exc: stripe.StripeError) -> ApiError:
    """Stripe refused or could not be reached: 502, without Stripe's internal details."""
    return ApiError(502, "payment_provider_error",
                    "The payment provider could not process the request; try again shortly.")


def is_unanswered(exc: BaseException) -> bool:
    return isinstance(exc, UNANSWERED)


def order_refused() -> FinalError:
    """Stripe definitely refused the order's object: the answer for this Idempotency-Key."""
    return FinalError(502, "payment_provider_error",
                      "The payment provider refused to start this payment; start a new checkout.")


def order_unanswered() -> ApiError:
    """Stripe did not answer (or not yet): the order is kept pending for the retry."""
    return ApiError(503, "payment_provider_unavailable",
                    "The payment provider did not answer; try again in a moment to continue this order.",
                    {"Retry-After": "5"})


async def create_checkout_session(client: stripe.StripeClient, *, order: dict, customer_id: str,
                                  success_url: str, cancel_url: str):
    order_id = str(order["id"])
    # Our order id travels in the metadata of every object Stripe creates for it, so
    # each webhook can find the order.
    metadata = {"order_id": order_id}
    params: dict = {
        "mode": order["mode"],
        "customer": customer_id,
        "client_reference_id": order_id,
        "line_items": [{"price": item["stripe_price_id"], "quantity": item["quantity"]} for item in order["items"]],
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


async def retrieve_checkout_session(client: stripe.StripeClient, session_id: str):
    return await client.v1.checkout.sessions.retrieve_async(session_id)


async def retrieve_payment_intent(client: stripe.StripeClient, intent_id: str):
    return await client.v1.payment_intents.retrieve_async(intent_id)


async def create_refund(client: stripe.StripeClient, *, order: dict):
    """A full refund of the order's payment; one per order, whatever the retries."""
    order_id = str(order["id"])
    params = {"payment_intent": order["stripe_payment_intent_id"], "metadata": {"order_id": order_id}}
    return await client.v1.refunds.create_async(params, idempotency_options("order", order_id, "refund"))
