"""Schemathesis hooks for the KDC's contract fuzzing (scripts/contract-fuzz.sh).

Every request to the admin API is signed with a real admin ticket: the
`Authorization` value comes from `tkt header`, run per request on the request
exactly as it goes on the wire. Signing happens in a `requests` auth object,
which `requests` calls after it has encoded the URL and serialized the body,
so the authenticator is bound to the very method, path+query and body bytes
the KDC receives (the admin API requires body binding on writes). A
`before_call` hook could only see the case before serialization.

Registered through `schemathesis.auth.set_from_requests`, the signer counts
as explicit auth: schemathesis' `ignored_auth` check then also replays each
admin operation without a ticket and with a made-up one, and expects a 401.

Environment (set by scripts/contract-fuzz.sh):
  CONTRACT_TKT    path to the `tkt` binary
  CONTRACT_ADMIN  the logged-in admin's full name (never updated or deleted)
  CONTRACT_USER   a user of the realm (full name)
  TKT_KDC_URL     the KDC under test (read by tkt)
  TKT_CACHE       the admin's ticket cache, already logged in (read by tkt)
  CONTRACT_STATS  file to write the signing statistics to (JSON), at exit
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import threading
from collections import Counter
from urllib.parse import unquote, urlsplit

import requests.auth
from hypothesis import strategies as st

import schemathesis

ADMIN_SERVICE = "kadmin/admin"
ADMIN = os.environ["CONTRACT_ADMIN"]
REALM = ADMIN.rsplit("@", 1)[1]
USER = os.environ["CONTRACT_USER"]
TKT = os.environ["CONTRACT_TKT"]
STATS_FILE = os.environ.get("CONTRACT_STATS")

_lock = threading.Lock()
_stats: Counter[str] = Counter()
# Each admin 401 that a signed request got, by its WWW-Authenticate error:
# with a valid ticket these point at the signer (or a server bug), never at
# the fuzzed input.
_signed_refusals: Counter[str] = Counter()
# Answers by "METHOD /path status", to see what the run reached.
_statuses: Counter[str] = Counter()


def _count(key: str, counter: Counter[str] = _stats) -> None:
    with _lock:
        counter[key] += 1


def _touches_the_fuzzing_admin(r: requests.PreparedRequest) -> bool:
    """Whether `r` would update or delete the principal that signs requests."""
    if r.method not in ("PATCH", "DELETE"):
        return False
    segments = urlsplit(r.url or "").path.split("/")
    if len(segments) != 4 or segments[:3] != ["", "admin", "principals"]:
        return False
    name = unquote(segments[3])
    return name in (ADMIN, ADMIN.split("@", 1)[0])


class AdminTicketAuth(requests.auth.AuthBase):
    """Adds `Authorization: Ticket …` from `tkt header` to a prepared request."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if _touches_the_fuzzing_admin(r):
            # Disabling, demoting or deleting the admin that signs would end
            # the admin API's coverage for the rest of the run (the KDC
            # re-reads the caller on every admin request). Sent unsigned, such
            # a request must get a 401, which is still checked.
            _count("self_protected")
            r.headers.pop("Authorization", None)
            return r
        body = r.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        args = [TKT, "header", "-X", r.method or "GET", "--service", ADMIN_SERVICE]
        if body is not None:
            # tkt takes the body as an argument: it must be UTF-8 without NUL.
            # Bodies that cannot be passed go unsigned and must get a 401; the
            # count is reported so that a run where this dominates is noticed.
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is None or "\x00" in text:
                _count("unsignable_body")
                r.headers.pop("Authorization", None)
                return r
            # `--data=` keeps a body such as `-1` from reading as an option.
            args.append(f"--data={text}")
        args.append(r.url or "")
        out = subprocess.run(args, capture_output=True, timeout=30, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"tkt header failed ({out.returncode}): {out.stderr.decode(errors='replace').strip()}")
        r.headers["Authorization"] = out.stdout.decode().strip()
        # Marks the request as signed for `after_call` (a header the KDC ignores
        # would change what is bound; a PreparedRequest attribute does not).
        r.kdc_signed = True  # type: ignore[attr-defined]
        _count("signed")
        return r


schemathesis.auth.set_from_requests(AdminTicketAuth()).apply_to(path_regex="^/admin/")


@schemathesis.hook
def after_call(context, case, response) -> None:  # noqa: ANN001 (schemathesis' hook signature)
    """Counts answers by operation and status; for the admin API, answers to
    signed requests by status class, and the 401s among them."""
    _count(f"{case.operation.label} {response.status_code}", _statuses)
    request = response.request
    if not urlsplit(request.url).path.startswith("/admin/"):
        return
    if not getattr(request, "kdc_signed", False):
        _count("unsigned_admin")
        return
    _count(f"signed_{response.status_code // 100}xx")
    if response.status_code == 401:
        # schemathesis' headers: lower-case names, lists of values.
        challenge = "; ".join(response.headers.get("www-authenticate", []))
        _count(challenge or "(no challenge)", _signed_refusals)


def _write_stats() -> None:
    if STATS_FILE:
        with open(STATS_FILE, "w", encoding="utf-8") as f:
            json.dump(
                {"stats": dict(_stats), "signed_refusals": dict(_signed_refusals), "statuses": dict(_statuses)},
                f,
                indent=1,
                sort_keys=True,
            )


atexit.register(_write_stats)


_PRINCIPAL = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?@[A-Z0-9-]+(\.[A-Z0-9-]+)*$")


@schemathesis.hook
def flatmap_body(context, body):  # noqa: ANN001 (schemathesis' hook signature)
    """Moves ticket requests into the KDC's realm, some of the time.

    A generated principal is almost never in the realm, and the KDC refuses
    other realms first (`wrong-realm`): without this, the pre-authentication
    challenge, its failure and the throttle are barely reached. Besides the
    generated body, draw the same body with its principals moved into the
    realm, and one naming a real user. Only well-formed names are moved, so
    a negative case keeps its violation.
    """
    if context.operation is None or context.operation.path not in ("/tickets/initial", "/tickets"):
        return st.just(body)
    if not isinstance(body, dict):
        return st.just(body)
    moved = dict(body)
    for member in ("client", "service"):
        value = moved.get(member)
        if isinstance(value, str) and _PRINCIPAL.match(value):
            candidate = f"{value.rsplit('@', 1)[0]}@{REALM}"
            if len(candidate) <= 255:
                moved[member] = candidate
    choices = [body, moved]
    if isinstance(body.get("client"), str) and _PRINCIPAL.match(body["client"]):
        choices.append({**moved, "client": USER})
    return st.sampled_from(choices)


# Refusals that depend on the KDC's state or configuration, never on the shape
# of the request, so no schema can rule them out: another realm's well-formed
# name, a service that does not exist, an operation the target's kind or role
# forbids (a user's keytab, deleting a built-in principal or oneself).
SEMANTIC_PROBLEMS = {
    "urn:kdc-http:problem:wrong-realm",
    "urn:kdc-http:problem:unknown-service",
    "urn:kdc-http:problem:invalid-operation",
    "urn:kdc-http:problem:not-renewable",
}
# `malformed-request`s of the same nature, by the KDC's detail text: a sealed
# secret can only open under the admin ticket's session key, which the
# generator does not have; and a bare name takes the KDC's realm, which can
# push it past 255 bytes. Matching text fails safe: if it changes, the
# refusal is reported again.
#
SEMANTIC_MALFORMED = {
    "sealed secret": re.compile(r"does not open under this session key"),
    "bare name with realm": re.compile(r"name longer than 255 bytes"),
}
# And one of JSON's: JSON Schema counts `7.0` as an integer, serde does not
# read it as one. The KDC's refusal (400) of a lexical float is deliberate.
# serde_json echoes the number as it parsed it, which for large values is not
# the text sent (`1902783281487419.0` came back as `...419.2`), so the detail
# only says "a float where an integer belongs"; the request body must then
# really hold an integral float.
FLOAT_FOR_INTEGER = re.compile(r"invalid type: floating point `[^`]*`, expected u(32|64)")


def _holds_integral_float(value: object) -> bool:
    """Whether a JSON body carries a float with no fractional part anywhere."""
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_holds_integral_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_integral_float(v) for v in value)
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:  # noqa: ANN001 (schemathesis' hook signature)
    """Drops "schema-valid request rejected" (ST202) for semantic refusals only.

    Every other failure, and every ST202 whose problem is a shape complaint
    the spec could have ruled out, is kept.
    """
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    kind = problem.get("type") if isinstance(problem, dict) else None
    detail = str(problem.get("detail", "")) if isinstance(problem, dict) else ""
    if kind in SEMANTIC_PROBLEMS:
        _count(f"semantic_400:{kind.rsplit(':', 1)[-1]}")
        return False
    if kind == "urn:kdc-http:problem:malformed-request":
        for label, pattern in SEMANTIC_MALFORMED.items():
            if pattern.search(detail):
                _count(f"semantic_400:malformed-request ({label})")
                return False
        if FLOAT_FOR_INTEGER.search(detail) and _holds_integral_float(case.body):
            _count("semantic_400:malformed-request (integer written as float)")
            return False
    return True
