"""Which URLs the client sends as they are: exactly those requests would leave unchanged."""

from __future__ import annotations

import random

import pytest
import requests

from target_salesforce_consent.salesforce.client import _is_plain_target
from target_salesforce_consent.salesforce.soql import form_encode

ORIGIN = "https://acme.my.salesforce.com"


def prepared_by_requests(url: str) -> str | None:
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url


@pytest.mark.parametrize(
    "target",
    [
        "/services/data/v62.0/limits",
        "/services/data/v62.0/query/01gD000000Abc12-2000",
        "/services/data/v62.0/jobs/ingest/750D000000Xyz/successfulResults",
        "/services/data/v62.0/query?q="
        + form_encode("SELECT Id, Email FROM Lead WHERE Email IN ('a@b.c', 'x+y@b.c', 'é@b.c')"),
        "/services/data/v62.0/query?q="
        + form_encode("SELECT Id FROM LeadHistory WHERE Field IN ('Newsletter__c') AND x >= 1"),
    ],
)
def test_the_clients_urls_are_sent_as_they_are(target: str) -> None:
    assert _is_plain_target(ORIGIN + target, len(ORIGIN))
    assert prepared_by_requests(ORIGIN + target) == ORIGIN + target


@pytest.mark.parametrize(
    "target",
    [
        "/a b", "/a#frag", "/q?x=%41", "/q?x=%7e", "/q?x=%2b", "/q?x=%", "/q?x=%zz",
        "/a/./b", "/a/../b", "/a/..", "/q?", "/é", "/a%2Fb", "/[x]", '/q?x="y"', "/q?x=<>",
        "/q?x=a|b", "/q?x=`", "/q?x={}", "/a\\b", "/q?x=^", "services", "",
    ],
)  # fmt: skip
def test_other_urls_are_left_to_the_session(target: str) -> None:
    assert not _is_plain_target(ORIGIN + target, len(ORIGIN))


def test_a_url_sent_as_it_is_is_always_one_requests_leaves_unchanged() -> None:
    """Random paths and queries from characters that matter to URL checks and quoting."""
    rng = random.Random(7)
    pool = "aZ09-._~!$&'()*+,;=:@/?#%[] \"<>|^`{}\\é2FEe4Dd"
    plain = 0
    for _ in range(20_000):
        target = "/" + "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
        url = ORIGIN + target
        if _is_plain_target(url, len(ORIGIN)):
            plain += 1
            assert prepared_by_requests(url) == url, target
    assert plain > 1000  # the check was put to the test
