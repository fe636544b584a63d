"""didomi-webhook-receiver: takes Didomi's webhooks and stores them durably for tap-didomi.

Needs the ``receiver`` extra (``pip install 'tap-didomi[receiver]'``) for its web server; the
spool module alone (what the tap reads) needs only the standard library and fsspec.
"""
