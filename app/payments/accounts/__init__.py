"""Users, passwords, sessions, CSRF, rate limits and each user's Stripe customer."""
