"""Signing an accepted certificate request and delivering it with CertificateSigned."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge.certificates import CertificateRequestRejected, SiteCA
from edge.ocpp.commands import CommandError, send_command
from edge.store import certificates

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)


async def deliver_certificate(
    site: SiteContext, authority: SiteCA, charger_id: str, request_id: int
) -> None:
    store = site.store
    csr = await store.run(lambda db: certificates.certificate_request_csr(db, request_id))
    try:
        chain = authority.sign(csr, charger_id)
    except CertificateRequestRejected as error:
        await _mark(site, request_id, "rejected", str(error), None)
        return
    except Exception as error:  # a CSR the library cannot sign (e.g. an unsupported key)
        log.exception("certificate request %d of %s could not be signed", request_id, charger_id)
        await _mark(site, request_id, "rejected", f"could not be signed: {error}", None)
        return
    try:
        answer = await send_command(
            site, charger_id, "CertificateSigned", {"certificate_chain": chain}
        )
    except CommandError as error:
        log.warning("certificate for %s not delivered: %s", charger_id, error)
        await _mark(site, request_id, "undelivered", str(error), chain)
        return
    status = answer.response.get("status")
    outcome = "installed" if status == "Accepted" else "refused by charger"
    await _mark(site, request_id, outcome, None, chain)


async def _mark(
    site: SiteContext, request_id: int, status: str, reason: str | None, chain: str | None
) -> None:
    await site.store.run(
        lambda db: certificates.mark_certificate_request(db, request_id, status, reason, chain)
    )
