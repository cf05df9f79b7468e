"""What a failed attempt says in the delivery log and the dead letter: a sentence for people.

aiohttp's own texts name its internals ("Cannot connect to host 127.0.0.1:9 ssl:default
[Connect call failed ...]", or an empty TimeoutError); a customer reading the log wants to
know what happened to their endpoint.
"""

from __future__ import annotations

import errno
from typing import Final

import aiohttp

from service.delivery.netguard import BlockedAddress

# What an OS error number means for someone running a webhook endpoint.
_OS_ERRORS: Final[dict[int, str]] = {
    errno.ECONNREFUSED: "connection refused by",
    errno.ECONNRESET: "connection reset by",
    errno.EHOSTUNREACH: "no route to",
    errno.ENETUNREACH: "network unreachable for",
    errno.ETIMEDOUT: "connection timed out to",
}


def describe_failure(exc: BaseException, timeout: aiohttp.ClientTimeout) -> str:
    """One line naming what went wrong, and where."""
    match exc:
        case BlockedAddress():
            return str(exc)
        case aiohttp.ClientConnectorCertificateError():
            return f"the TLS certificate of {exc.host}:{exc.port} is not trusted: " + (
                str(exc.certificate_error) or type(exc.certificate_error).__name__
            )
        case aiohttp.ClientSSLError():
            return f"TLS failed with {exc.host}:{exc.port}: {_reason(exc.os_error)}"
        case aiohttp.ClientConnectorDNSError():
            return f"cannot resolve {exc.host}"
        case aiohttp.ClientConnectorError():
            what = _OS_ERRORS.get(exc.os_error.errno or 0)
            if what is not None:
                return f"{what} {exc.host}:{exc.port}"
            return f"cannot connect to {exc.host}:{exc.port}: {_reason(exc.os_error)}"
        case aiohttp.ConnectionTimeoutError() if timeout.connect is not None:
            return f"no connection within {timeout.connect:g} s"
        case TimeoutError() if timeout.total is not None:
            return f"no response within {timeout.total:g} s"
        case aiohttp.ServerDisconnectedError():
            return "the server closed the connection before answering"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_redirect(status: int, location: str | None) -> str:
    """A 3xx is never followed: say where it pointed, so the URL can be fixed."""
    if not location:
        return f"redirect ({status}) without a Location header; redirects are not followed"
    return (
        f"redirect ({status}) to {location[:500]}; redirects are not followed, "
        "set the subscription's URL to it"
    )


def _reason(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__
