// The checkout page (templates/checkout.html): the embedded card form for a one-time
// price, hosted Checkout for it or for a subscription. A static file, not an inline
// script: the load balancer's Content-Security-Policy allows scripts from this site and
// Stripe only. The price and the publishable key come from data- attributes.
(function () {
  "use strict";
  const root = document.getElementById("checkout");
  if (!root) {
    return;
  }
  const items = [{price_id: root.dataset.priceId, quantity: 1}];
  const errorBox = document.getElementById("payment-error");

  // One key per page view: a double click or a retry after a declined card reuses the
  // same order and PaymentIntent instead of creating new ones.
  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  const idempotencyKeys = {intent: newKey(), session: newKey()};

  async function post(path, body, key) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Idempotency-Key": key},
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error((data.error && data.error.message) || "The payment could not be started.");
    }
    return data;
  }

  async function goToHostedCheckout(mode) {
    errorBox.textContent = "";
    try {
      const session = await post("/api/checkout/sessions", {mode: mode, items: items}, idempotencyKeys.session);
      window.location.assign(session.url);
    } catch (err) {
      errorBox.textContent = err.message;
    }
  }

  const subscribe = document.getElementById("subscribe");
  if (subscribe) {
    subscribe.addEventListener("click", () => goToHostedCheckout("subscription"));
    return;
  }
  document.getElementById("hosted").addEventListener("click", () => goToHostedCheckout("payment"));

  const stripe = Stripe(root.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const form = document.getElementById("payment-form");
  const payButton = document.getElementById("pay");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    payButton.disabled = true;
    try {
      const intent = await post("/api/payment-intents", {items: items}, idempotencyKeys.intent);
      const result = await stripe.confirmCardPayment(intent.client_secret, {payment_method: {card: card}});
      if (result.error) {
        throw new Error(result.error.message || "The card was not accepted.");
      }
      // The order turns paid when Stripe's webhook arrives, not because of this redirect.
      window.location.assign("/success?order=" + encodeURIComponent(intent.order_id));
    } catch (err) {
      errorBox.textContent = err.message;
      payButton.disabled = false;
    }
  });
})();
