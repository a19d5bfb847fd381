// The account page (templates/account.html): "Manage billing" opens Stripe's billing
// portal. A static file, not an inline script: the load balancer's
// Content-Security-Policy allows scripts from this site and Stripe only.
(function () {
  "use strict";
  const button = document.getElementById("manage-billing");
  if (!button) {
    return;  // no Stripe customer yet: nothing to manage
  }
  const errorBox = document.getElementById("billing-error");

  button.addEventListener("click", async () => {
    errorBox.textContent = "";
    button.disabled = true;
    try {
      // No body; the JSON type is what keeps cross-site forms out (payments/http.py).
      const response = await fetch("/api/billing-portal", {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json"},
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok || !data.url) {
        throw new Error((data.error && data.error.message) || "The billing portal could not be opened.");
      }
      window.location.assign(data.url);
    } catch (err) {
      errorBox.textContent = err.message;
      button.disabled = false;
    }
  });
})();
