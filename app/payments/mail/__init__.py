"""Transactional mail: an outbox row written with the change it tells about (outbox.py,
notices.py), delivered by `python -m payments mail-worker` (worker.py) over SMTP, rendered
from templates/mail/ (render.py)."""
