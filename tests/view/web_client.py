"""The other process of the requests view's test: asks web_server.py for an item."""

import sys

import requests

from tidescope.integrations.requests import instrument_requests

instrument_requests()


def ask(port):
    return requests.get(f"http://127.0.0.1:{port}/items?id=1", timeout=30).text


print(ask(int(sys.argv[1])))
