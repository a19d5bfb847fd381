"""Orders: line items, pricing, status lifecycle, and the Stripe objects that pay for them."""
