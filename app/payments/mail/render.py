"""A mail from its outbox row: subject, plain text and HTML from templates/mail/<kind>.*

Two Jinja2 environments over the same directory: the HTML one escapes every value (a
product name is the shop's, but a customer's name may come to be rendered too), the text
one does not. Both fail on an undefined value instead of sending a mail with a hole."""

from __future__ import annotations

import functools
from email.message import EmailMessage
from email.utils import formatdate

import jinja2

from payments.templating import TEMPLATES_DIR, format_money

MAIL_TEMPLATES_DIR = TEMPLATES_DIR / "mail"
SUBJECTS = {
    "order_paid": "Your receipt",
    "refund_issued": "Your refund",
    "subscription_started": "Your subscription has started",
    "subscription_renewed": "Your subscription was renewed",
    "subscription_payment_failed": "We could not take your subscription payment",
    "subscription_cancelled": "Your subscription is cancelled",
}


@functools.cache
def _environment(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(MAIL_TEMPLATES_DIR), autoescape=html,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["money"] = lambda amount, currency: "" if amount is None else format_money(amount, currency or "usd")
    return env


def message_id(row: dict, domain: str) -> str:
    """The same for every attempt of the row: a server (or a mail client) that got it once
    can tell a resend after a crash from a new mail."""
    return f"<outbox-{row['message_token']}@{domain}>"


def build_message(row: dict, *, sender: str, shop_name: str = "the shop") -> EmailMessage:
    context = {**row["context"], "shop_name": shop_name}
    message = EmailMessage()
    message["Subject"] = SUBJECTS[row["kind"]]
    message["From"] = sender
    message["To"] = row["recipient"]
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(row, sender.rpartition("@")[2].strip(">") or "localhost")
    message.set_content(_environment(False).get_template(f"{row['kind']}.txt").render(context))
    message.add_alternative(_environment(True).get_template(f"{row['kind']}.html").render(context), subtype="html")
    return message
